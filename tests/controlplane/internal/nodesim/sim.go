package nodesim

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// State is what a simulated node is doing.
type State string

const (
	// Alive: heartbeats (Lease renewals) are kept up and pods on the node are run.
	Alive State = "Alive"
	// Dead: the device lost power. No heartbeats; when revived it reboots (containers restart).
	Dead State = "Dead"
	// Partitioned: the device runs but cannot reach the API server. No heartbeats; when revived its pods are
	// still running and it reports them Ready again.
	Partitioned State = "Partitioned"
)

// Kubelet defaults the simulator follows: renew the Lease every 10 s (a quarter of its 40 s duration) and
// report the full node status at least every 5 minutes.
const (
	LeaseDurationSeconds = 40
	LeaseRenewInterval   = 10 * time.Second
	StatusReportInterval = 5 * time.Minute
	leaseNamespace       = "kube-node-lease"
)

// ErrNotFound and ErrExists are returned for operations on an unknown node or when adding a node twice.
var (
	ErrNotFound = errors.New("no such simulated node")
	ErrExists   = errors.New("simulated node already exists")
	// errAPI wraps failures of the Kubernetes API (not the caller's fault).
	errAPI = errors.New("kubernetes API")
)

// NodeInfo is the control API's view of one simulated node.
type NodeInfo struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	IP    string `json:"ip"`
}

type simNode struct {
	spec  NodeSpec
	index int
	ip    string
	state State
	// stop ends the heartbeat loop (nil while not alive).
	stop context.CancelFunc
	// nextPod numbers pod IPs on this node.
	nextPod int
	// restart holds the UIDs of pods whose containers restart on the next sync (the node rebooted).
	restart map[string]bool
}

// Simulator owns the simulated nodes of one control plane.
type Simulator struct {
	client kubernetes.Interface
	// ctx bounds every background loop; it is the simulator's lifetime.
	ctx   context.Context
	mu    sync.Mutex
	nodes map[string]*simNode
	used  map[int]bool
	pods  *podRunner
}

// New returns a simulator that lives until ctx is cancelled. Call Start before adding nodes.
func New(ctx context.Context, client kubernetes.Interface) *Simulator {
	s := &Simulator{client: client, ctx: ctx, nodes: map[string]*simNode{}, used: map[int]bool{}}
	s.pods = newPodRunner(s)
	return s
}

// Start begins watching pods so that those bound to live simulated nodes run.
func (s *Simulator) Start() error {
	return s.pods.start(s.ctx)
}

// List returns every simulated node, sorted by name.
func (s *Simulator) List() []NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeInfo, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, NodeInfo{Name: n.spec.Name, State: n.state, IP: n.ip})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Add registers a node as a kubelet would and starts its heartbeats.
func (s *Simulator) Add(ctx context.Context, spec NodeSpec) (NodeInfo, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return NodeInfo{}, err
	}
	s.mu.Lock()
	if _, ok := s.nodes[spec.Name]; ok {
		s.mu.Unlock()
		return NodeInfo{}, fmt.Errorf("%w: %s", ErrExists, spec.Name)
	}
	index := 1
	for s.used[index] {
		index++
	}
	if index > 254 {
		s.mu.Unlock()
		return NodeInfo{}, fmt.Errorf("at most 254 simulated nodes")
	}
	n := &simNode{spec: spec, index: index, ip: fmt.Sprintf("127.1.%d.1", index), state: Alive, restart: map[string]bool{}}
	s.used[index] = true
	s.nodes[spec.Name] = n
	s.mu.Unlock()

	node, err := BuildNode(spec, n.ip)
	if err == nil {
		err = s.register(ctx, node)
	}
	if err != nil {
		s.mu.Lock()
		delete(s.nodes, spec.Name)
		delete(s.used, index)
		s.mu.Unlock()
		return NodeInfo{}, err
	}
	s.mu.Lock()
	s.startHeartbeats(n)
	s.mu.Unlock()
	return NodeInfo{Name: spec.Name, State: Alive, IP: n.ip}, nil
}

// Kill stops a node's heartbeats as if it lost power. Its pods restart when it is revived.
func (s *Simulator) Kill(name string) (NodeInfo, error) {
	return s.silence(name, Dead)
}

// Partition stops a node's heartbeats as if it lost its network. Its pods keep running.
func (s *Simulator) Partition(name string) (NodeInfo, error) {
	return s.silence(name, Partitioned)
}

func (s *Simulator) silence(name string, state State) (NodeInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[name]
	if !ok {
		return NodeInfo{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if n.stop != nil {
		n.stop()
		n.stop = nil
	}
	// A partitioned node that then loses power reboots, as does a dead one.
	if !(n.state == Dead && state == Partitioned) {
		n.state = state
	}
	return NodeInfo{Name: name, State: n.state, IP: n.ip}, nil
}

// Revive brings a killed or partitioned node back: it reports Ready at once and resumes heartbeats, and its pods
// run again (restarted if the node was dead).
func (s *Simulator) Revive(name string) (NodeInfo, error) {
	s.mu.Lock()
	n, ok := s.nodes[name]
	if !ok {
		s.mu.Unlock()
		return NodeInfo{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if n.state != Alive {
		if n.state == Dead {
			for _, uid := range s.pods.podUIDsOn(name) {
				n.restart[uid] = true
			}
		}
		n.state = Alive
		s.startHeartbeats(n)
	}
	info := NodeInfo{Name: name, State: n.state, IP: n.ip}
	s.mu.Unlock()
	s.pods.resyncNode(name)
	return info, nil
}

// Remove stops a node and deletes its Node object (its Lease is garbage-collected through its owner reference).
func (s *Simulator) Remove(ctx context.Context, name string) error {
	s.mu.Lock()
	n, ok := s.nodes[name]
	if ok {
		if n.stop != nil {
			n.stop()
		}
		delete(s.nodes, name)
		delete(s.used, n.index)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	err := s.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: delete node %s: %w", errAPI, name, err)
	}
	return nil
}

// alive returns the node's IP, a fresh pod IP and whether the pod should restart, if name is a live simulated
// node; ok is false otherwise.
func (s *Simulator) alive(name, podUID string, wantIP bool) (hostIP, podIP string, restart, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, found := s.nodes[name]
	if !found || n.state != Alive {
		return "", "", false, false
	}
	if wantIP {
		n.nextPod = n.nextPod%252 + 1
		podIP = fmt.Sprintf("127.1.%d.%d", n.index, n.nextPod+1)
	}
	restart = n.restart[podUID]
	return n.ip, podIP, restart, true
}

// restarted records that a pod's restart after a reboot has been reported.
func (s *Simulator) restarted(name, podUID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nodes[name]; ok {
		delete(n.restart, podUID)
	}
}

// startHeartbeats starts the heartbeat loop of n; s.mu must be held.
func (s *Simulator) startHeartbeats(n *simNode) {
	ctx, cancel := context.WithCancel(s.ctx)
	n.stop = cancel
	go s.heartbeat(ctx, n.spec.Name)
}

// heartbeat posts Ready status at once and then renews the Lease every LeaseRenewInterval (and the status
// every StatusReportInterval), until ctx ends.
func (s *Simulator) heartbeat(ctx context.Context, name string) {
	logger := klog.FromContext(ctx).WithValues("node", name)
	lastStatus := time.Time{}
	for {
		if time.Since(lastStatus) >= StatusReportInterval {
			if err := s.postStatus(ctx, name); err != nil {
				logger.Error(err, "post node status")
			} else {
				lastStatus = time.Now()
			}
		}
		if err := s.renewLease(ctx, name); err != nil && ctx.Err() == nil {
			logger.Error(err, "renew node lease")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(LeaseRenewInterval):
		}
	}
}

func (s *Simulator) register(ctx context.Context, node *corev1.Node) error {
	want := node.Status
	if _, err := s.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("%w: register node %s: %w", errAPI, node.Name, err)
	}
	// The status is written separately (as a kubelet does); controllers may touch the new node meanwhile.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := s.client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		current.Status.Capacity = want.Capacity
		current.Status.Allocatable = want.Allocatable
		current.Status.Addresses = want.Addresses
		current.Status.NodeInfo = want.NodeInfo
		current.Status.DaemonEndpoints = want.DaemonEndpoints
		current.Status.Conditions = ReadyConditions(current.Status.Conditions, metav1.Now())
		_, err = s.client.CoreV1().Nodes().UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		// Leave no half-registered node behind: the caller may retry the same name.
		_ = s.client.CoreV1().Nodes().Delete(context.WithoutCancel(ctx), node.Name, metav1.DeleteOptions{})
		return fmt.Errorf("%w: post initial status of node %s: %w", errAPI, node.Name, err)
	}
	return nil
}

func (s *Simulator) postStatus(ctx context.Context, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := s.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status.Conditions = ReadyConditions(node.Status.Conditions, metav1.Now())
		_, err = s.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (s *Simulator) renewLease(ctx context.Context, name string) error {
	leases := s.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NowMicro()
	lease, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := s.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node for lease owner: %w", err)
		}
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](LeaseDurationSeconds),
				RenewTime: &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}
