package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"variant-parallel/tests/controlplane/internal/components"
	"variant-parallel/tests/controlplane/internal/etcd"
	"variant-parallel/tests/controlplane/internal/kubeconfig"
	"variant-parallel/tests/controlplane/internal/nodesim"
	"variant-parallel/tests/controlplane/internal/pki"
)

// Options configures a control plane. Extra component flags are appended after the defaults, so a test can
// override any default (for example --node-monitor-grace-period for the controller manager).
type Options struct {
	DataDir string
	Nodes   int
	// Address is the IP address the API server binds to and advertises (default 127.0.0.1). Another address
	// (one inside a network namespace with real nodes) also publishes it as the endpoint of the in-cluster
	// `kubernetes` Service, so pods can reach the API server.
	Address string
	// Port is the API server's port; 0 picks a free one.
	Port                  int
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string
}

// Limits on how long each start phase may take on a loaded 2-core CI machine before start gives up.
const (
	apiserverReadyTimeout = 3 * time.Minute
	componentReadyTimeout = 2 * time.Minute
	serviceClusterIPRange = "10.96.0.0/16"
	serviceAccountIssuer  = "https://kubernetes.default.svc.cluster.local"
	// simulatorQPS is the node simulator's client request rate (burst twice that).
	simulatorQPS = 1000
)

// ControlPlane is a running control plane. Stop it with Stop; Failed reports a component that died.
type ControlPlane struct {
	State  State
	etcd   *etcd.Server
	cancel context.CancelFunc
	// apiDone is closed when the API server's Run returns.
	apiDone chan struct{}
	failed  chan error
	sim     *http.Server
}

// Failed delivers the first error of a component that stopped on its own.
func (c *ControlPlane) Failed() <-chan error { return c.failed }

// Start brings up the whole control plane and returns once the API server is ready, the controllers run, and
// the initial nodes are Ready and schedulable.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	began := time.Now()
	logger := klog.FromContext(ctx)
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", pkiDir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a control plane (%s exists): stop it first or use another directory", dir, StateFile)
	}
	address := opts.Address
	if address == "" {
		address = "127.0.0.1"
	}
	addrIP := net.ParseIP(address)
	if addrIP == nil {
		return nil, fmt.Errorf("address %q: not an IP address", address)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	apiPort, etcdClient, etcdPeer := ports[0], ports[1], ports[2]
	if opts.Port != 0 {
		apiPort = opts.Port
	}
	server := "https://" + net.JoinHostPort(address, strconv.Itoa(apiPort))

	ca, files, err := pki.Generate(pkiDir,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1"), addrIP})
	if err != nil {
		return nil, err
	}
	kubeconfigs := map[string]pki.Identity{
		filepath.Join(dir, "kubeconfig"):                       {User: "vp-admin", Groups: []string{"system:masters"}},
		filepath.Join(pkiDir, "controller-manager.kubeconfig"): {User: "system:kube-controller-manager"},
		filepath.Join(pkiDir, "scheduler.kubeconfig"):          {User: "system:kube-scheduler"},
	}
	for path, id := range kubeconfigs {
		cert, err := ca.Client(id)
		if err != nil {
			return nil, err
		}
		if err := kubeconfig.Write(path, server, ca.CertPEM, id.User, cert); err != nil {
			return nil, err
		}
	}
	admin := filepath.Join(dir, "kubeconfig")

	e, err := etcd.Start(filepath.Join(dir, "etcd"), etcdClient, etcdPeer)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	cp := &ControlPlane{etcd: e, cancel: cancel, apiDone: make(chan struct{}), failed: make(chan error, 4)}
	ok := false
	defer func() {
		if !ok {
			cp.Stop()
		}
	}()
	run := func(name string, done chan struct{}, f func(context.Context, []string) error, args []string) {
		go func() {
			if done != nil {
				defer close(done)
			}
			err := f(runCtx, args)
			if runCtx.Err() == nil {
				if err == nil {
					err = errors.New("stopped unexpectedly")
				}
				cp.failed <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	// Loopback may not be published as the kubernetes Service endpoint; with a loopback address nothing runs
	// in-cluster clients, so no endpoint is published at all.
	reconciler := "lease"
	if addrIP.IsLoopback() {
		reconciler = "none"
	}
	run("kube-apiserver", cp.apiDone, components.RunAPIServer, append([]string{
		"--etcd-servers=" + e.ClientURL,
		"--bind-address=" + address, "--advertise-address=" + address, "--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + pkiDir,
		"--tls-cert-file=" + files.ServingCert, "--tls-private-key-file=" + files.ServingKey,
		"--client-ca-file=" + files.CACert,
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + files.SAPublic, "--service-account-signing-key-file=" + files.SAPrivate,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false",
		"--endpoint-reconciler-type=" + reconciler,
		// Real kubelets (scripts/site.sh) register their site address as InternalIP; logs and exec go there.
		"--kubelet-preferred-address-types=InternalIP",
	}, opts.APIServerArgs...))

	cfg, err := clientcmd.BuildConfigFromFlags("", admin)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", admin, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := cp.waitFor(runCtx, "kube-apiserver /readyz", apiserverReadyTimeout, func(ctx context.Context) (bool, error) {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	}); err != nil {
		return nil, err
	}
	logger.Info("kube-apiserver ready", "server", server, "after", time.Since(began).Round(time.Millisecond))

	kcm := filepath.Join(pkiDir, "controller-manager.kubeconfig")
	run("kube-controller-manager", nil, components.RunControllerManager, append([]string{
		"--kubeconfig=" + kcm, "--authentication-kubeconfig=" + kcm, "--authorization-kubeconfig=" + kcm,
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + files.SAPrivate, "--root-ca-file=" + files.CACert,
		"--cluster-signing-cert-file=" + files.CACert, "--cluster-signing-key-file=" + files.CAKey,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
	}, opts.ControllerManagerArgs...))
	sched := filepath.Join(pkiDir, "scheduler.kubeconfig")
	run("kube-scheduler", nil, components.RunScheduler, append([]string{
		"--kubeconfig=" + sched, "--authentication-kubeconfig=" + sched, "--authorization-kubeconfig=" + sched,
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
	}, opts.SchedulerArgs...))

	// The service account controller creating "default" in every namespace shows the controllers run; tests
	// need it anyway (pods cannot be created in a namespace before its default service account exists).
	if err := cp.waitFor(runCtx, "the default service account (kube-controller-manager)", componentReadyTimeout, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, err
	}

	// The simulator plays every kubelet at once: give it the request budget of many kubelets (each has 50 QPS,
	// burst 100 by default), not client-go's default 5 QPS, which cannot even renew 100 nodes' Leases every 10 s
	// and made large simulated clusters look like failing ones.
	simCfg := rest.CopyConfig(cfg)
	simCfg.QPS, simCfg.Burst = simulatorQPS, 2*simulatorQPS
	simClient, err := kubernetes.NewForConfig(simCfg)
	if err != nil {
		return nil, fmt.Errorf("node simulator client: %w", err)
	}
	sim := nodesim.New(runCtx, simClient)
	if err := sim.Start(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("node simulator listener: %w", err)
	}
	cp.sim = &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = cp.sim.Serve(lis) }()

	for i := range opts.Nodes {
		if _, err := sim.Add(runCtx, nodesim.NodeSpec{Name: fmt.Sprintf("edge-%d", i)}); err != nil {
			return nil, err
		}
	}
	if err := cp.waitFor(runCtx, "the initial nodes to be Ready and schedulable", componentReadyTimeout, func(ctx context.Context) (bool, error) {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: nodesim.SimulatedLabel})
		if err != nil {
			return false, nil
		}
		return len(nodes.Items) >= opts.Nodes && allSchedulable(nodes.Items), nil
	}); err != nil {
		return nil, err
	}

	cp.State = State{
		PID: os.Getpid(), Server: server, Kubeconfig: admin, Simulator: "http://" + lis.Addr().String(),
		DataDir: dir, StartSeconds: time.Since(processStart()).Seconds(),
	}
	if err := WriteState(dir, cp.State); err != nil {
		return nil, err
	}
	ok = true
	return cp, nil
}

// waitFor polls cond every 200 ms until it holds, a component fails, or timeout passes.
func (c *ControlPlane) waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if done, err := cond(ctx); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		} else if done {
			return nil
		}
		select {
		case err := <-c.failed:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops every component and etcd. It waits a few seconds for the API server to finish its requests.
func (c *ControlPlane) Stop() {
	if c.sim != nil {
		_ = c.sim.Close()
	}
	c.cancel()
	select {
	case <-c.apiDone:
	case <-time.After(10 * time.Second):
	}
	c.etcd.Close()
	if c.State.DataDir != "" {
		_ = os.Remove(filepath.Join(c.State.DataDir, StateFile))
	}
}

func allSchedulable(nodes []corev1.Node) bool {
	for _, n := range nodes {
		if len(n.Spec.Taints) > 0 {
			return false
		}
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return false
		}
	}
	return true
}

// freePorts reserves n distinct free loopback TCP ports (released just before use; the window is tiny).
func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// started approximates the process start time (package initialisation), for the reported start duration.
var started = time.Now()

func processStart() time.Time { return started }
