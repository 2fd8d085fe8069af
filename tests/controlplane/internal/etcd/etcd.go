// Package etcd runs an embedded etcd server on loopback for the test API server: one member, its own data
// directory, fsync off (the data is thrown away after the run, and fsync is the slowest part of etcd on a
// shared CI disk).
package etcd

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	// ClientURL is where the API server connects (http://127.0.0.1:PORT).
	ClientURL string
}

// Start launches etcd with its data in dir, serving clients on clientPort and peers on peerPort (both loopback),
// and waits until it is ready to serve.
func Start(dir string, clientPort, peerPort int) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "vp-test"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e, ClientURL: client.String()}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 60s")
	}
}

// Close stops etcd and waits for it to release its data directory.
func (s *Server) Close() {
	s.etcd.Close()
}
