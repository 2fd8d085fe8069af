package nodesim

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDefaultsAndValidation(t *testing.T) {
	s := NodeSpec{Name: "edge-1"}.WithDefaults()
	if s.CPU != DefaultCPU || s.Memory != DefaultMemory || s.Pods != DefaultPods || s.Arch != DefaultArch {
		t.Fatalf("defaults not applied: %+v", s)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("valid spec rejected: %v", err)
	}
	bad := map[string]NodeSpec{
		"name":             {Name: "Edge_1"},
		"cpu \"lots\"":     {Name: "e", CPU: "lots"},
		"must be positive": {Name: "e", Memory: "0"},
		"pods":             {Name: "e", Pods: -1},
		"arch \"z80\"":     {Name: "e", Arch: "z80"},
		"label key":        {Name: "e", Labels: map[string]string{"bad key": "v"}},
		"value":            {Name: "e", Labels: map[string]string{"k": "has space"}},
	}
	for want, spec := range bad {
		err := spec.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("spec %+v: want error containing %q, got %v", spec, want, err)
		}
	}
}

func TestBuildNode(t *testing.T) {
	n, err := BuildNode(NodeSpec{Name: "edge-1", Labels: map[string]string{"zone": "a"}}.WithDefaults(), "127.1.1.1")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"kubernetes.io/hostname": "edge-1", "kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux",
		EdgeRoleLabel: "", SimulatedLabel: "true", "zone": "a",
	} {
		if got, ok := n.Labels[k]; !ok || got != v {
			t.Errorf("label %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if got := n.Status.Allocatable.Cpu().String(); got != "4" {
		t.Errorf("allocatable cpu %s", got)
	}
	if got := n.Status.Capacity.Memory().String(); got != "4Gi" {
		t.Errorf("capacity memory %s", got)
	}
	if n.Status.Addresses[0].Address != "127.1.1.1" || n.Status.NodeInfo.KubeletVersion != KubeletVersion {
		t.Errorf("addresses/info: %+v %+v", n.Status.Addresses, n.Status.NodeInfo)
	}
}

func TestReadyConditionsKeepTransitionTimes(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	first := ReadyConditions(nil, t0)
	second := ReadyConditions(first, t1)
	for _, c := range second {
		if !c.LastHeartbeatTime.Equal(&t1) || !c.LastTransitionTime.Equal(&t0) {
			t.Errorf("%s: heartbeat %v transition %v", c.Type, c.LastHeartbeatTime, c.LastTransitionTime)
		}
	}
	// After the node controller set Ready=Unknown, Ready=True is a transition.
	unknown := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, LastTransitionTime: t0}}
	for _, c := range ReadyConditions(unknown, t1) {
		if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Equal(&t1)) {
			t.Errorf("ready after unknown: %+v", c)
		}
	}
}

func TestRunningStatus(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "u1"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "i"}},
			Containers:     []corev1.Container{{Name: "a", Image: "x"}, {Name: "b", Image: "y"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBestEffort},
	}
	if PodIsRunning(pod) {
		t.Fatal("pending pod reported running")
	}
	now := metav1.NewTime(time.Unix(5000, 0))
	pod.Status = RunningStatus(pod, "127.1.1.1", "127.1.1.2", now, false)
	if !PodIsRunning(pod) {
		t.Fatalf("not running after RunningStatus: %+v", pod.Status)
	}
	if pod.Status.QOSClass != corev1.PodQOSBestEffort || pod.Status.PodIP != "127.1.1.2" || len(pod.Status.InitContainerStatuses) != 1 {
		t.Errorf("status lost fields: %+v", pod.Status)
	}
	// A reboot restarts containers but keeps the pod IP.
	later := metav1.NewTime(time.Unix(6000, 0))
	pod.Status = RunningStatus(pod, "127.1.1.1", "127.1.1.9", later, true)
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.RestartCount != 1 || cs.LastTerminationState.Terminated == nil || !cs.State.Running.StartedAt.Equal(&later) {
			t.Errorf("after reboot: %+v", cs)
		}
	}
	if pod.Status.PodIP != "127.1.1.2" {
		t.Errorf("pod IP changed to %s", pod.Status.PodIP)
	}
	// The node controller marking the pod not ready makes it need an update again.
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			pod.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	if PodIsRunning(pod) {
		t.Error("pod with Ready=False reported running")
	}
}

func TestFailingReadinessKeepsThePodRunningButNotReady(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "u1", Annotations: map[string]string{ReadinessFailingAnnotation: "HTTP probe failed with statuscode: 503"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}},
	}
	now := metav1.NewTime(time.Unix(5000, 0))
	pod.Status = RunningStatus(pod, "127.1.1.1", "127.1.1.2", now, false)
	if !PodIsRunning(pod) {
		t.Fatalf("a pod failing readiness as asked needs no update: %+v", pod.Status)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.ContainerStatuses[0].Ready || pod.Status.ContainerStatuses[0].State.Running == nil {
		t.Errorf("want running, not ready: %+v", pod.Status)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && (c.Status != corev1.ConditionFalse || c.Message != "HTTP probe failed with statuscode: 503") {
			t.Errorf("Ready condition: %+v", c)
		}
	}
	// The annotation goes (the probe passes again): the pod needs an update, after which it is Ready.
	delete(pod.Annotations, ReadinessFailingAnnotation)
	if PodIsRunning(pod) {
		t.Error("a pod whose readiness recovered reported as up to date")
	}
	pod.Status = RunningStatus(pod, "127.1.1.1", "127.1.1.2", now, false)
	if !PodIsRunning(pod) || !hasCondition(pod.Status.Conditions, corev1.PodReady, corev1.ConditionTrue) {
		t.Errorf("not ready after recovery: %+v", pod.Status)
	}
}

func TestEndedPodsStayEnded(t *testing.T) {
	for phase, ended := range map[corev1.PodPhase]bool{
		corev1.PodFailed: true, corev1.PodSucceeded: true, corev1.PodRunning: false, corev1.PodPending: false,
	} {
		pod := &corev1.Pod{Status: corev1.PodStatus{Phase: phase}}
		if got := PodHasEnded(pod); got != ended {
			t.Errorf("PodHasEnded(%s) = %v, want %v", phase, got, ended)
		}
	}
}
