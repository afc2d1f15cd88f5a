// Command plexus-test-device-plugin is a kubelet device plugin (API v1beta1) for the e2e tests: it exposes the node's
// fake NICs dpnic0..dpnic<K-1> (see package fakenic) as the extended resource plexus.test/nic, each device named by its
// made-up PCI address, and writes an NPWG device-info file for each device. Test-only: it never checks the links.
//
//	plexus-test-device-plugin --devices K [--plugin-dir /var/lib/kubelet/device-plugins] [--devinfo-dir DIR]
//
// It runs in the node's namespaces (e2e/cluster starts it there) and registers with the kubelet's kubelet.sock; when
// the kubelet restarts (kubelet.sock replaced, or the plugin's own socket removed by the kubelet's cleanup) it serves
// again and registers again. SIGTERM: stops, removes its socket and its device-info files.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"plexus.invalid/e2e-devices/fakenic"
)

const socketName = "plexus-test-nic.sock"

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices    []*pluginapi.Device
	known      map[string]bool
	devinfoDir string
	stop       chan struct{}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the devices once (they never change) and holds the stream until the plugin stops.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	select {
	case <-s.Context().Done():
	case <-p.stop:
	}
	return nil
}

// Allocate gives each container the IDs of its devices in PCIDEVICE_PLEXUS_TEST_NIC (as the SR-IOV device plugin
// does) and refreshes their device-info files.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !p.known[id] {
				return nil, fmt.Errorf("unknown device %q", id)
			}
			if err := fakenic.WriteDeviceInfo(p.devinfoDir, fakenic.DeviceResource, id); err != nil {
				return nil, fmt.Errorf("device-info of %s: %w", id, err)
			}
		}
		ids := append([]string(nil), c.DevicesIds...)
		sort.Strings(ids)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"PCIDEVICE_PLEXUS_TEST_NIC": strings.Join(ids, ",")},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// inode of a path, 0 when it does not exist.
func inode(path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// serve listens on the plugin's socket, then registers with the kubelet; returns the server to stop.
func (p *plugin) serve(dir string) (*grpc.Server, error) {
	sock := filepath.Join(dir, socketName)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(ln) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		defer conn.Close()
		_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
			Version:      pluginapi.Version,
			Endpoint:     socketName,
			ResourceName: fakenic.DeviceResource,
			Options:      &pluginapi.DevicePluginOptions{},
		})
	}
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("register with the kubelet: %w", err)
	}
	return srv, nil
}

func main() {
	count := flag.Int("devices", 0, "number of fake NICs (dpnic0..)")
	dir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device plugin directory")
	devinfo := flag.String("devinfo-dir", fakenic.DevInfoDir, "where device-info files go")
	flag.Parse()
	if *count < 1 || *count > fakenic.MaxDevices {
		log.Fatalf("--devices takes 1..%d", fakenic.MaxDevices)
	}
	p := &plugin{known: map[string]bool{}, devinfoDir: *devinfo, stop: make(chan struct{})}
	for i := 0; i < *count; i++ {
		id := fakenic.DevicePlugin.DeviceID(i)
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
		p.known[id] = true
		if err := fakenic.WriteDeviceInfo(*devinfo, fakenic.DeviceResource, id); err != nil {
			log.Fatalf("device-info of %s: %v", id, err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	kubeletSock := filepath.Join(*dir, "kubelet.sock")
	ownSock := filepath.Join(*dir, socketName)
	var srv *grpc.Server
	var registeredWith uint64
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		// (Re)register when the kubelet's socket is new or the kubelet's start-up cleanup removed ours.
		if ino := inode(kubeletSock); ino != 0 && (ino != registeredWith || inode(ownSock) == 0) {
			if srv != nil {
				srv.Stop()
				srv = nil
			}
			var err error
			if srv, err = p.serve(*dir); err != nil {
				log.Printf("%v (retrying)", err)
			} else {
				registeredWith = ino
				log.Printf("registered %s with %d devices at %s", fakenic.DeviceResource, *count, kubeletSock)
			}
		}
		select {
		case <-tick.C:
		case s := <-sigs:
			log.Printf("%v: stopping", s)
			close(p.stop)
			if srv != nil {
				srv.Stop()
			}
			_ = os.Remove(ownSock)
			for id := range p.known {
				_ = os.Remove(fakenic.DeviceInfoPath(*devinfo, fakenic.DeviceResource, id))
			}
			return
		}
	}
}
