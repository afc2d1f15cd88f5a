package main

import (
	"encoding/json"
	"testing"
)

func TestRewrite(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// Top level, as Multus injects it; pciBusID and the capability's copy go too.
		{`{"cniVersion":"1.0.0","name":"n","type":"plexus-test-device","deviceID":"0000:d1:00.2","pciBusID":"0000:d1:00.2","runtimeConfig":{"deviceID":"0000:d1:00.2","mac":"0a:58:00:00:00:01"},"ipam":{"type":"static"}}`,
			`{"cniVersion":"1.0.0","device":"dpnic2","ipam":{"type":"static"},"name":"n","runtimeConfig":{"mac":"0a:58:00:00:00:01"},"type":"host-device"}`},
		// Only the capability.
		{`{"cniVersion":"1.0.0","name":"n","type":"plexus-test-device","runtimeConfig":{"deviceID":"0000:d2:01.0"}}`,
			`{"cniVersion":"1.0.0","device":"dranic8","name":"n","type":"host-device"}`},
	} {
		var conf map[string]any
		if err := json.Unmarshal([]byte(c.in), &conf); err != nil {
			t.Fatal(err)
		}
		if err := rewrite(conf); err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got, _ := json.Marshal(conf); string(got) != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	for _, in := range []string{`{"type":"plexus-test-device"}`, `{"deviceID":"dpnic0"}`, `{"deviceID":7}`,
		`{"runtimeConfig":{"deviceID":"0000:aa:00.0"}}`} {
		var conf map[string]any
		_ = json.Unmarshal([]byte(in), &conf)
		if err := rewrite(conf); err == nil {
			t.Errorf("%s: rewritten to %v, want an error", in, conf)
		}
	}
}
