// Package nodesim simulates edge nodes without kubelets: it registers Node objects with realistic capacity and
// labels, keeps their heartbeats up (Lease renewals in kube-node-lease, the Ready condition) as a kubelet does,
// marks pods bound to a live node Running and Ready, and lets a test kill, partition or revive a node.
//
// This file holds the pure part: validating a node description and building the Node and pod status objects.
package nodesim

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults for a node description: a small ARM edge board.
const (
	DefaultCPU    = "4"
	DefaultMemory = "4Gi"
	DefaultPods   = 110
	DefaultArch   = "arm64"
	// EdgeRoleLabel marks every simulated node as an edge node.
	EdgeRoleLabel = "node-role.kubernetes.io/edge"
	// SimulatedLabel marks nodes owned by this simulator.
	SimulatedLabel = "vp.dev/simulated-node"
	// KubeletVersion is what simulated nodes report (the version of the control plane they join).
	KubeletVersion = "v1.37.2"
)

// NodeSpec describes one simulated node, as the control API receives it.
type NodeSpec struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// CPU and Memory are Kubernetes quantities for capacity (allocatable is the same: no system reservation).
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	Pods   int    `json:"pods,omitempty"`
	// Arch is the kubernetes.io/arch label and nodeInfo architecture (amd64, arm64, arm).
	Arch string `json:"arch,omitempty"`
}

// WithDefaults fills unset fields with the defaults above.
func (s NodeSpec) WithDefaults() NodeSpec {
	if s.CPU == "" {
		s.CPU = DefaultCPU
	}
	if s.Memory == "" {
		s.Memory = DefaultMemory
	}
	if s.Pods == 0 {
		s.Pods = DefaultPods
	}
	if s.Arch == "" {
		s.Arch = DefaultArch
	}
	return s
}

// Validate reports the first problem with a (defaulted) spec as a message naming the field.
func (s NodeSpec) Validate() error {
	if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", s.Name, strings.Join(errs, "; "))
	}
	for k, v := range s.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %q value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	for field, q := range map[string]string{"cpu": s.CPU, "memory": s.Memory} {
		v, err := resource.ParseQuantity(q)
		if err != nil {
			return fmt.Errorf("%s %q: %w", field, q, err)
		}
		if v.Sign() <= 0 {
			return fmt.Errorf("%s %q: must be positive", field, q)
		}
	}
	if s.Pods < 1 || s.Pods > 10000 {
		return fmt.Errorf("pods %d: must be between 1 and 10000", s.Pods)
	}
	switch s.Arch {
	case "amd64", "arm64", "arm", "riscv64":
	default:
		return fmt.Errorf("arch %q: must be one of amd64, arm64, arm, riscv64", s.Arch)
	}
	return nil
}

// BuildNode returns the Node object a kubelet would register for spec, with InternalIP ip. Its status carries
// capacity and node info; conditions are set by ReadyConditions on each heartbeat.
func BuildNode(s NodeSpec, ip string) (*corev1.Node, error) {
	capacity := corev1.ResourceList{}
	for name, q := range map[corev1.ResourceName]string{
		corev1.ResourceCPU: s.CPU, corev1.ResourceMemory: s.Memory,
		corev1.ResourcePods: fmt.Sprint(s.Pods), corev1.ResourceEphemeralStorage: "32Gi",
	} {
		v, err := resource.ParseQuantity(q)
		if err != nil {
			return nil, fmt.Errorf("node %s %s %q: %w", s.Name, name, q, err)
		}
		capacity[name] = v
	}
	labels := map[string]string{
		"kubernetes.io/hostname": s.Name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     s.Arch,
		EdgeRoleLabel:            "",
		SimulatedLabel:           "true",
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip},
				{Type: corev1.NodeHostName, Address: s.Name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: s.Name, SystemUUID: s.Name, BootID: s.Name,
				KernelVersion: "6.1.0-vpsim", OSImage: "vp node simulator",
				ContainerRuntimeVersion: "vpsim://1.0", KubeletVersion: KubeletVersion,
				OperatingSystem: "linux", Architecture: s.Arch,
			},
		},
	}, nil
}

// ReadyConditions returns the conditions a healthy kubelet reports at time now, keeping the transition times of
// conditions whose status did not change.
func ReadyConditions(old []corev1.NodeCondition, now metav1.Time) []corev1.NodeCondition {
	want := []struct {
		t      corev1.NodeConditionType
		status corev1.ConditionStatus
		reason string
		msg    string
	}{
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"},
	}
	out := make([]corev1.NodeCondition, 0, len(want))
	for _, w := range want {
		c := corev1.NodeCondition{
			Type: w.t, Status: w.status, Reason: w.reason, Message: w.msg,
			LastHeartbeatTime: now, LastTransitionTime: now,
		}
		for _, o := range old {
			if o.Type == w.t && o.Status == w.status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	return out
}

// PodHasEnded reports whether the pod is in a terminal phase (Failed or Succeeded), which a kubelet never leaves.
func PodHasEnded(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

// ReadinessFailingAnnotation on a pod makes the simulated kubelet report its containers running but not ready,
// as a real kubelet does while a readiness probe fails; the value is the condition's message. Tests set it to
// simulate a server that answers its readiness probe with an error for as long as the annotation stays.
const ReadinessFailingAnnotation = "sim.vp.dev/readiness-failing"

// readinessFailing returns the message of ReadinessFailingAnnotation and whether the pod has it.
func readinessFailing(pod *corev1.Pod) (string, bool) {
	msg, ok := pod.Annotations[ReadinessFailingAnnotation]
	return msg, ok
}

// PodIsRunning reports whether pod's status already says what RunningStatus would (so no update is needed).
func PodIsRunning(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		return false
	}
	_, failing := readinessFailing(pod)
	ready := corev1.ConditionTrue
	if failing {
		ready = corev1.ConditionFalse
	}
	if !hasCondition(pod.Status.Conditions, corev1.PodInitialized, corev1.ConditionTrue) {
		return false
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if !hasCondition(pod.Status.Conditions, t, ready) {
			return false
		}
	}
	if len(pod.Status.ContainerStatuses) != len(pod.Spec.Containers) {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Ready == failing || cs.State.Running == nil {
			return false
		}
	}
	return true
}

// RunningStatus returns pod's status as a kubelet would report it once all containers started and passed their
// readiness probes on a node with IP hostIP. The pod keeps its IP if it has one; restarted adds one restart to
// every container (the node rebooted).
func RunningStatus(pod *corev1.Pod, hostIP, podIP string, now metav1.Time, restarted bool) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.HostIP = hostIP
	st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	if st.PodIP == "" {
		st.PodIP = podIP
		st.PodIPs = []corev1.PodIP{{IP: podIP}}
	}
	if st.StartTime == nil || restarted {
		st.StartTime = &now
	}
	for _, t := range []corev1.PodConditionType{
		corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled,
	} {
		st.Conditions = setCondition(st.Conditions, t, now)
	}
	failMsg, failing := readinessFailing(pod)
	if failing {
		for _, t := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
			st.Conditions = unsetCondition(st.Conditions, t, "ContainersNotReady", failMsg, now)
		}
	}
	old := map[string]corev1.ContainerStatus{}
	for _, cs := range pod.Status.ContainerStatuses {
		old[cs.Name] = cs
	}
	st.ContainerStatuses = nil
	started := true
	for _, c := range pod.Spec.Containers {
		prev, had := old[c.Name]
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "vpsim://" + c.Image,
			ContainerID: fmt.Sprintf("vpsim://%s/%s", pod.UID, c.Name),
			Ready:       !failing, Started: &started, RestartCount: prev.RestartCount,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}
		if had && prev.State.Running != nil && !restarted {
			cs.State.Running.StartedAt = prev.State.Running.StartedAt
		}
		if restarted && had {
			cs.RestartCount++
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 255, Reason: "Unknown", Message: "node rebooted", FinishedAt: now,
			}}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "vpsim://" + c.Image,
			ContainerID: fmt.Sprintf("vpsim://%s/%s", pod.UID, c.Name), Ready: true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now,
			}},
		})
	}
	return st
}

func hasCondition(conds []corev1.PodCondition, t corev1.PodConditionType, s corev1.ConditionStatus) bool {
	for _, c := range conds {
		if c.Type == t {
			return c.Status == s
		}
	}
	return false
}

// unsetCondition sets condition t to False with reason and message (keeping its transition time while it was False).
func unsetCondition(conds []corev1.PodCondition, t corev1.PodConditionType, reason, msg string, now metav1.Time) []corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			if conds[i].Status != corev1.ConditionFalse {
				conds[i].Status = corev1.ConditionFalse
				conds[i].LastTransitionTime = now
			}
			conds[i].Reason, conds[i].Message = reason, msg
			return conds
		}
	}
	return append(conds, corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: now})
}

func setCondition(conds []corev1.PodCondition, t corev1.PodConditionType, now metav1.Time) []corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			if conds[i].Status != corev1.ConditionTrue {
				conds[i].Status = corev1.ConditionTrue
				conds[i].LastTransitionTime = now
				conds[i].Reason = ""
				conds[i].Message = ""
			}
			return conds
		}
	}
	return append(conds, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
}
