// Command plexus-test-podresources asks a node's kubelet what it allocated, through the PodResources API v1 (the API a
// meta-plugin reads a pod's devices from), and prints the answer as JSON (protojson). Test-only: it lets the tests and
// people see the kubelet's side of the fake NICs (device plugin devices and DRA claim devices) in the node's namespaces.
//
//	plexus-test-podresources [--socket PATH] get NAMESPACE POD | list | allocatable
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func main() {
	socket := flag.String("socket", "/var/lib/kubelet/pod-resources/kubelet.sock", "the kubelet's PodResources socket")
	flag.Parse()
	args := flag.Args()
	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := podresources.NewPodResourcesListerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp proto.Message
	switch {
	case len(args) == 3 && args[0] == "get":
		resp, err = client.Get(ctx, &podresources.GetPodResourcesRequest{PodNamespace: args[1], PodName: args[2]})
	case len(args) == 1 && args[0] == "list":
		resp, err = client.List(ctx, &podresources.ListPodResourcesRequest{})
	case len(args) == 1 && args[0] == "allocatable":
		resp, err = client.GetAllocatableResources(ctx, &podresources.AllocatableResourcesRequest{})
	default:
		fmt.Fprintln(os.Stderr, "usage: plexus-test-podresources [--socket PATH] get NAMESPACE POD | list | allocatable")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, err := protojson.Marshal(resp)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(b))
}
