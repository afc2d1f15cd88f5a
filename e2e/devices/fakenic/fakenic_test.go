package fakenic

import (
	"encoding/json"
	"os"
	"testing"
)

func TestDeviceIDsNameTheirLinks(t *testing.T) {
	for _, k := range kinds {
		seen := map[string]bool{}
		for i := 0; i < MaxDevices; i++ {
			id := k.DeviceID(i)
			if seen[id] {
				t.Fatalf("%s: device ID %s twice", k.LinkPrefix, id)
			}
			seen[id] = true
			link, err := LinkForDeviceID(id)
			if err != nil || link != k.Link(i) {
				t.Fatalf("LinkForDeviceID(%s) = %q, %v; want %s", id, link, err, k.Link(i))
			}
			if len(link) > 15 {
				t.Fatalf("link name %s is longer than IFNAMSIZ-1", link)
			}
		}
	}
	if DevicePlugin.DeviceID(0) != "0000:d1:00.0" || DRA.DeviceID(9) != "0000:d2:01.1" {
		t.Fatalf("addresses: %s %s", DevicePlugin.DeviceID(0), DRA.DeviceID(9))
	}
}

func TestOtherIDsAreRefused(t *testing.T) {
	for _, id := range []string{"", "dpnic0", "0000:d3:00.0", "0000:d1:00.8", "0000:d1:20.0", "0000:D1:00.0",
		"0001:d1:00.0", "0000:d1:00.0\n", "../0000:d1:00.0"} {
		if link, err := LinkForDeviceID(id); err == nil {
			t.Errorf("LinkForDeviceID(%q) = %q, want an error", id, link)
		}
	}
}

func TestDeviceInfoFile(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDeviceInfo(dir, DeviceResource, "0000:d1:00.1"); err != nil {
		t.Fatal(err)
	}
	path := dir + "/plexus.test-nic-0000:d1:00.1-device.json"
	if DeviceInfoPath(dir, DeviceResource, "0000:d1:00.1") != path {
		t.Fatalf("path %s", DeviceInfoPath(dir, DeviceResource, "0000:d1:00.1"))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := `{"pci":{"pci-address":"0000:d1:00.1"},"type":"pci","version":"1.1.0"}`
	if w, _ := json.Marshal(got); string(w) != want {
		t.Fatalf("device-info %s, want %s", w, want)
	}
	// Written again (a restarted plugin): replaced, not refused.
	if err := WriteDeviceInfo(dir, DeviceResource, "0000:d1:00.1"); err != nil {
		t.Fatal(err)
	}
}
