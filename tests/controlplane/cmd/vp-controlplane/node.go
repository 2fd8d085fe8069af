package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"variant-parallel/tests/controlplane/internal/cluster"
	"variant-parallel/tests/controlplane/internal/nodesim"
)

// node drives the node simulator of a running control plane through its control API.
func node(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "data directory of the running control plane (required)")
	var labels repeated
	fs.Var(&labels, "label", "node label key=value (repeatable; add only)")
	spec := nodesim.NodeSpec{}
	fs.StringVar(&spec.CPU, "cpu", "", "CPU capacity (add only; default "+nodesim.DefaultCPU+")")
	fs.StringVar(&spec.Memory, "memory", "", "memory capacity (add only; default "+nodesim.DefaultMemory+")")
	fs.IntVar(&spec.Pods, "pods", 0, "pod capacity (add only; default 110)")
	fs.StringVar(&spec.Arch, "arch", "", "architecture (add only; default "+nodesim.DefaultArch+")")
	// Flags may come before or after the verb and name.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *dir == "" || len(rest) == 0 {
		return fmt.Errorf("node: usage: node --data-dir DIR list|add|kill|partition|revive|remove [NAME]")
	}
	st, err := cluster.ReadState(*dir)
	if err != nil {
		return err
	}
	verb := rest[0]
	if verb == "list" {
		return call(http.MethodGet, st.Simulator+"/nodes", nil)
	}
	if len(rest) != 2 {
		return fmt.Errorf("node %s: exactly one node name expected", verb)
	}
	name := rest[1]
	switch verb {
	case "add":
		spec.Name = name
		spec.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("--label %q: want key=value", l)
			}
			spec.Labels[k] = v
		}
		body, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		return call(http.MethodPost, st.Simulator+"/nodes", body)
	case "kill", "partition", "revive":
		return call(http.MethodPost, st.Simulator+"/nodes/"+name+"/"+verb, nil)
	case "remove":
		return call(http.MethodDelete, st.Simulator+"/nodes/"+name, nil)
	default:
		return fmt.Errorf("node: unknown verb %q", verb)
	}
}

func call(method, url string, body []byte) error {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("node simulator at %s: %w", url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(out)))
	}
	_, err = os.Stdout.Write(out)
	return err
}

// state prints the state file of a running control plane.
func state(args []string) error {
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "data directory of the running control plane (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := cluster.ReadState(*dir)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(st)
}
