// Command plexus-test-dra-driver is a DRA driver (resource.k8s.io/v1, through the kubeletplugin helper of
// k8s.io/dynamic-resource-allocation) for the e2e tests: driver nic.plexus.test, registered with the node's kubelet
// (plugins_registry), publishing one ResourceSlice for its node (pool = the node's name) whose devices nic0..nic<K-1>
// stand for the node's fake NICs dranic0..dranic<K-1> (see package fakenic). Each device carries the attributes
// Multus and dra-driver-sriov use: k8s.cni.cncf.io/deviceID (the NIC's made-up PCI address) and
// k8s.cni.cncf.io/resourceName (plexus.test/dra-nic), plus nic.plexus.test/link (the link's name).
//
//	plexus-test-dra-driver --devices K --node-name NAME --kubeconfig FILE
//
// Prepare returns the allocated devices without CDI device IDs (nothing is injected into the containers: the NIC is
// handed to the pod by the CNI delegate); it refuses a device another prepared claim holds. Test-only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path"
	"sync"
	"syscall"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"plexus.invalid/e2e-devices/fakenic"
)

type driver struct {
	node   string
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	// device name → UID of the claim it is prepared for.
	inUse map[string]types.UID
}

func (d *driver) PrepareResourceClaims(_ context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[types.UID]kubeletplugin.PrepareResult{}
	for _, c := range claims {
		out[c.UID] = d.prepare(c)
	}
	return out, nil
}

func (d *driver) prepare(c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	if c.Status.Allocation == nil {
		return kubeletplugin.PrepareResult{Err: fmt.Errorf("claim %s/%s is not allocated", c.Namespace, c.Name)}
	}
	var devs []kubeletplugin.Device
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != fakenic.DRADriver {
			continue
		}
		if r.Pool != d.node {
			return kubeletplugin.PrepareResult{Err: fmt.Errorf("device %s of pool %s is not on node %s", r.Device, r.Pool, d.node)}
		}
		if holder, ok := d.inUse[r.Device]; ok && holder != c.UID {
			return kubeletplugin.PrepareResult{Err: fmt.Errorf("device %s is prepared for claim %s already", r.Device, holder)}
		}
		devs = append(devs, kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device})
	}
	for _, dev := range devs {
		d.inUse[dev.DeviceName] = c.UID
	}
	log.Printf("prepared claim %s/%s (%s): %d devices", c.Namespace, c.Name, c.UID, len(devs))
	return kubeletplugin.PrepareResult{Devices: devs}
}

func (d *driver) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[types.UID]error{}
	for _, c := range claims {
		for dev, holder := range d.inUse {
			if holder == c.UID {
				delete(d.inUse, dev)
			}
		}
		out[c.UID] = nil
		log.Printf("unprepared claim %s (%s)", c.NamespacedName, c.UID)
	}
	return out, nil
}

func (d *driver) HandleError(_ context.Context, err error, msg string) {
	log.Printf("%s: %v", msg, err)
	if !errors.Is(err, kubeletplugin.ErrRecoverable) {
		d.cancel(fmt.Errorf("%s: %w", msg, err))
	}
}

func main() {
	count := flag.Int("devices", 0, "number of fake NICs (dranic0..)")
	node := flag.String("node-name", "", "the node's name (its pool and the ResourceSlice's nodeName)")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the driver's identity")
	flag.Parse()
	if *count < 1 || *count > fakenic.MaxDevices || *node == "" || *kubeconfig == "" {
		log.Fatalf("usage: --devices 1..%d --node-name NAME --kubeconfig FILE", fakenic.MaxDevices)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// The helper listens in the driver's directory under the kubelet's plugins dir but does not make it.
	if err := os.MkdirAll(path.Join(kubeletplugin.KubeletPluginsDir, fakenic.DRADriver), 0o750); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	d := &driver{node: *node, cancel: cancel, inUse: map[string]types.UID{}}
	helper, err := kubeletplugin.Start(ctx, d,
		kubeletplugin.DriverName(fakenic.DRADriver),
		kubeletplugin.NodeName(*node),
		kubeletplugin.KubeClient(client))
	if err != nil {
		log.Fatalf("start the kubelet plugin: %v", err)
	}
	var devices []resourceapi.Device
	for i := 0; i < *count; i++ {
		devices = append(devices, resourceapi.Device{
			Name: fakenic.DRADeviceName(i),
			Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
				fakenic.AttrDeviceID:     {StringValue: ptr.To(fakenic.DRA.DeviceID(i))},
				fakenic.AttrResourceName: {StringValue: ptr.To(fakenic.DRAResource)},
				fakenic.AttrLink:         {StringValue: ptr.To(fakenic.DRA.Link(i))},
			},
		})
	}
	if err := helper.PublishResources(ctx, resourceslice.DriverResources{
		Pools: map[string]resourceslice.Pool{*node: {Slices: []resourceslice.Slice{{Devices: devices}}}},
	}); err != nil {
		log.Fatalf("publish ResourceSlices: %v", err)
	}
	log.Printf("driver %s on %s: %d devices published", fakenic.DRADriver, *node, *count)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sigs:
		log.Printf("%v: stopping", s)
	case <-ctx.Done():
		log.Printf("stopping: %v", context.Cause(ctx))
	}
	failed := ctx.Err() != nil
	helper.Stop()
	if failed {
		os.Exit(1)
	}
}
