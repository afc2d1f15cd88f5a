// Command plexus-test-device is a test-only CNI plugin: the delegate of the e2e device networks. The real host-device
// plugin reads a deviceID as a PCI address in /sys, which the fake NICs do not have; this plugin reads the deviceID a
// meta-plugin injected (top-level "deviceID", as Multus injects it, or runtimeConfig.deviceID, the capability), turns
// it into the name of the link it designates (package fakenic: 0000:d1:00.3 → dpnic3, 0000:d2:00.1 → dranic1), and
// runs the real host-device from CNI_PATH with the config rewritten: "device" set to that link, "type" host-device,
// and "deviceID", "pciBusID" and runtimeConfig.deviceID removed. Every other key, the environment and host-device's
// result, error and exit status pass through unchanged.
//
// ADD, CHECK and DEL need the deviceID (a DEL without it is an error: the meta-plugin must give the delegate the same
// device at DEL); VERSION, STATUS and GC go to host-device as they are.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"plexus.invalid/e2e-devices/fakenic"
)

// CNI error codes (CNI spec, "Error").
const (
	codeIncompatibleVersion = 1
	codeInvalidConfig       = 7
	codeIOFailure           = 5
)

type cniError struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

func fail(cniVersion string, code int, format string, args ...any) {
	if cniVersion == "" {
		cniVersion = "1.0.0"
	}
	b, _ := json.Marshal(struct {
		CNIVersion string `json:"cniVersion"`
		cniError
	}{cniVersion, cniError{code, fmt.Sprintf(format, args...)}})
	os.Stdout.Write(b)
	os.Exit(1)
}

// rewrite turns the delegate config into host-device's.
func rewrite(conf map[string]any) error {
	id, _ := conf["deviceID"].(string)
	rc, _ := conf["runtimeConfig"].(map[string]any)
	if id == "" && rc != nil {
		id, _ = rc["deviceID"].(string)
	}
	if id == "" {
		return errors.New(`no "deviceID" in the config (top level or runtimeConfig): the meta-plugin injects it`)
	}
	link, err := fakenic.LinkForDeviceID(id)
	if err != nil {
		return err
	}
	conf["type"] = "host-device"
	conf["device"] = link
	delete(conf, "deviceID")
	delete(conf, "pciBusID")
	if rc != nil {
		delete(rc, "deviceID")
		if len(rc) == 0 {
			delete(conf, "runtimeConfig")
		}
	}
	return nil
}

func hostDevice() (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		p := filepath.Join(dir, "host-device")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no host-device plugin in CNI_PATH %q", os.Getenv("CNI_PATH"))
}

func main() {
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("", codeIOFailure, "read stdin: %v", err)
	}
	out := stdin
	switch cmd := os.Getenv("CNI_COMMAND"); cmd {
	case "ADD", "CHECK", "DEL":
		var conf map[string]any
		if err := json.Unmarshal(stdin, &conf); err != nil {
			fail("", codeInvalidConfig, "config is not a JSON object: %v", err)
		}
		version, _ := conf["cniVersion"].(string)
		if err := rewrite(conf); err != nil {
			fail(version, codeInvalidConfig, "plexus-test-device %s: %v", cmd, err)
		}
		if out, err = json.Marshal(conf); err != nil {
			fail(version, codeInvalidConfig, "%v", err)
		}
	case "":
		fail("", codeIncompatibleVersion, "no CNI_COMMAND")
	}
	plugin, err := hostDevice()
	if err != nil {
		fail("", codeInvalidConfig, "%v", err)
	}
	c := exec.Command(plugin)
	c.Stdin = bytes.NewReader(out)
	c.Stdout = os.Stdout
	c.Stderr = os.Stderr
	if err := c.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fail("", codeIOFailure, "run %s: %v", plugin, strings.TrimSpace(err.Error()))
	}
}
