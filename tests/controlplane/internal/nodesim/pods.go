package nodesim

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// podRunner plays the kubelet's part for pods bound to simulated nodes: on a live node a pod becomes Running and
// Ready, and a pod being deleted is removed at once (its containers "stop" immediately). Pods on a dead or
// partitioned node are left alone, as a real kubelet that cannot reach the API server would leave them.
type podRunner struct {
	sim    *Simulator
	queue  workqueue.TypedRateLimitingInterface[string]
	lister listersv1.PodLister
	// indexer finds the pods bound to a node; nil until start.
	indexer cache.Indexer
}

const nodeNameIndex = "spec.nodeName"

func newPodRunner(sim *Simulator) *podRunner {
	return &podRunner{
		sim: sim,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vp-nodesim-pods"},
		),
	}
}

func (r *podRunner) start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(r.sim.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{nodeNameIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return fmt.Errorf("pod index: %w", err)
	}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return fmt.Errorf("pod handler: %w", err)
	}
	r.lister = listersv1.NewPodLister(inf.GetIndexer())
	r.indexer = inf.GetIndexer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("pod informer did not sync")
	}
	for range 2 {
		go r.work(ctx)
	}
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	return nil
}

// podUIDsOn lists the UIDs of the pods bound to node.
func (r *podRunner) podUIDsOn(node string) []string {
	if r.indexer == nil {
		return nil
	}
	objs, err := r.indexer.ByIndex(nodeNameIndex, node)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, string(p.UID))
		}
	}
	return out
}

// resyncNode queues every pod bound to node (after a revive).
func (r *podRunner) resyncNode(node string) {
	if r.indexer == nil {
		return
	}
	objs, err := r.indexer.ByIndex(nodeNameIndex, node)
	if err != nil {
		return
	}
	for _, o := range objs {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			r.queue.Add(key)
		}
	}
}

func (r *podRunner) work(ctx context.Context) {
	for {
		key, quit := r.queue.Get()
		if quit {
			return
		}
		if err := r.sync(ctx, key); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).V(2).Info("pod sync failed, retrying", "pod", key, "err", err)
			r.queue.AddRateLimited(key)
		} else {
			r.queue.Forget(key)
		}
		r.queue.Done(key)
	}
}

func (r *podRunner) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := r.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		return nil
	}
	hostIP, podIP, restart, ok := r.sim.alive(pod.Spec.NodeName, string(pod.UID), pod.Status.PodIP == "")
	if !ok {
		return nil
	}
	pods := r.sim.client.CoreV1().Pods(ns)
	if pod.DeletionTimestamp != nil {
		err := pods.Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: ptr.To(pod.UID)},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if PodIsRunning(pod) && !restart {
		return nil
	}
	// A pod that ended (evicted, failed, succeeded) stays ended, as with a real kubelet: tests mark pods Failed
	// through the API to simulate evictions.
	if PodHasEnded(pod) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = RunningStatus(pod, hostIP, podIP, metav1.NewTime(time.Now()), restart)
	if _, err := pods.UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if restart {
		r.sim.restarted(pod.Spec.NodeName, string(pod.UID))
	}
	return nil
}
