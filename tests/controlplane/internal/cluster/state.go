// Package cluster assembles the test control plane: certificates, embedded etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and the node simulator, all in this process, on loopback.
package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// StateFile is the name, inside the data directory, of the file written once the control plane is ready. Its
// presence is the readiness signal for scripts and the Rust test helper.
const StateFile = "state.json"

// State is what a client needs to use a running control plane.
type State struct {
	PID int `json:"pid"`
	// Server is the API server URL (https://127.0.0.1:PORT).
	Server string `json:"server"`
	// Kubeconfig is the admin kubeconfig (client certificate in group system:masters).
	Kubeconfig string `json:"kubeconfig"`
	// Simulator is the node simulator's control API URL (http://127.0.0.1:PORT).
	Simulator string `json:"simulator"`
	DataDir   string `json:"dataDir"`
	// StartSeconds is how long the start took, from process start to ready.
	StartSeconds float64 `json:"startSeconds"`
}

// WriteState writes s to dir/StateFile atomically (write then rename), so a reader never sees half a file.
func WriteState(dir string, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("publish state: %w", err)
	}
	return nil
}

// ReadState reads the state of the control plane whose data directory is dir.
func ReadState(dir string) (State, error) {
	var s State
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return s, fmt.Errorf("no running control plane in %s (start one with `vp-controlplane up`): %w", dir, err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("read %s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}
