// Package fakenic holds the one naming rule the test-only device drivers and the test delegate share: which link in
// a node's network namespace stands for which fake NIC, and the made-up PCI address that is the NIC's device ID.
//
// Two sets of K links per node, created by e2e/cluster (up --devices K) as macvlans of the node's lan0:
//
//	kind          link name        device ID (PCI address)   exposed as
//	device plugin dpnic<i>         0000:d1:<i/8>.<i%8>       resource plexus.test/nic (kubelet device plugin)
//	DRA           dranic<i>        0000:d2:<i/8>.<i%8>       driver nic.plexus.test, device nic<i> of the node's pool
//
// The PCI addresses exist nowhere in /sys: they only name the links, as an SR-IOV device plugin names VFs.
package fakenic

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Kind is one of the two sets of fake NICs on a node.
type Kind struct {
	// LinkPrefix: the links are <LinkPrefix><i>.
	LinkPrefix string
	// Bus is the PCI bus of the made-up addresses.
	Bus int
}

var (
	// DevicePlugin is the set the device plugin exposes (resource plexus.test/nic).
	DevicePlugin = Kind{LinkPrefix: "dpnic", Bus: 0xd1}
	// DRA is the set the DRA driver exposes (driver nic.plexus.test).
	DRA   = Kind{LinkPrefix: "dranic", Bus: 0xd2}
	kinds = []Kind{DevicePlugin, DRA}
)

// MaxDevices is the largest K: 32 PCI devices of 8 functions on one bus.
const MaxDevices = 256

const (
	// DeviceResource is the device plugin's extended resource name.
	DeviceResource = "plexus.test/nic"
	// DRADriver is the DRA driver's name (and the DeviceClass's).
	DRADriver = "nic.plexus.test"
	// DRAResource is the value of the k8s.cni.cncf.io/resourceName attribute of the DRA devices (what a NAD names).
	DRAResource = "plexus.test/dra-nic"
	// AttrDeviceID and AttrResourceName are the ResourceSlice attribute keys Multus and dra-driver-sriov use.
	AttrDeviceID     = "k8s.cni.cncf.io/deviceID"
	AttrResourceName = "k8s.cni.cncf.io/resourceName"
	// AttrLink names the link in the node's namespace (for people reading the slices).
	AttrLink = DRADriver + "/link"
	// DevInfoDir is where device plugins leave NPWG device-info files for the meta-plugin.
	DevInfoDir = "/var/run/k8s.cni.cncf.io/devinfo/dp"
)

// Link is the name of NIC i of the kind.
func (k Kind) Link(i int) string { return k.LinkPrefix + strconv.Itoa(i) }

// DeviceID is the made-up PCI address of NIC i of the kind.
func (k Kind) DeviceID(i int) string { return fmt.Sprintf("0000:%02x:%02x.%x", k.Bus, i/8, i%8) }

// DRADeviceName is the name of NIC i in the DRA driver's ResourceSlice.
func DRADeviceName(i int) string { return "nic" + strconv.Itoa(i) }

var pciAddress = regexp.MustCompile(`^0000:([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$`)

// LinkForDeviceID is the link a device ID names, or an error for an ID that is not one of the fake NICs' addresses.
func LinkForDeviceID(id string) (string, error) {
	m := pciAddress.FindStringSubmatch(id)
	if m == nil {
		return "", fmt.Errorf("device ID %q is not a PCI address of the form 0000:bb:dd.f", id)
	}
	bus, _ := strconv.ParseInt(m[1], 16, 32)
	dev, _ := strconv.ParseInt(m[2], 16, 32)
	fn, _ := strconv.ParseInt(m[3], 16, 32)
	for _, k := range kinds {
		if int(bus) == k.Bus {
			return k.Link(int(dev)*8 + int(fn)), nil
		}
	}
	return "", fmt.Errorf("device ID %q is on bus %s, which holds no fake NIC", id, m[1])
}

// DeviceInfo is an NPWG device-info v1.1.0 document of type pci.
type DeviceInfo struct {
	Type    string `json:"type"`
	Version string `json:"version"`
	PCI     struct {
		PCIAddress string `json:"pci-address"`
	} `json:"pci"`
}

// DeviceInfoPath is the device plugin's device-info file for a device: <dir>/<resource, / → ->-<id>-device.json,
// the name Multus and the NPWG device-info spec derive from the resource name and the device ID.
func DeviceInfoPath(dir, resource, id string) string {
	clean := func(s string) string { return strings.ReplaceAll(s, "/", "-") }
	return filepath.Join(dir, clean(resource)+"-"+clean(id)+"-device.json")
}

// WriteDeviceInfo writes the device-info file of a device (read-only, replaced atomically).
func WriteDeviceInfo(dir, resource, id string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	info := DeviceInfo{Type: "pci", Version: "1.1.0"}
	info.PCI.PCIAddress = id
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	path := DeviceInfoPath(dir, resource, id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o444); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
