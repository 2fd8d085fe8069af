package nodesim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The control API's input checks answer before any Kubernetes call, so a simulator without a client serves them.
func TestControlAPIRejectsBadRequests(t *testing.T) {
	srv := httptest.NewServer(New(context.Background(), nil).Handler())
	defer srv.Close()
	cases := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/healthz", "", 200, "ok"},
		{"GET", "/nodes", "", 200, "[]"},
		{"POST", "/nodes", "{not json", 400, "node description"},
		{"POST", "/nodes", `{"name":"e","colour":"red"}`, 400, "unknown field"},
		{"POST", "/nodes", `{"name":"E!"}`, 400, "name"},
		{"POST", "/nodes", `{"name":"e","memory":"-1Gi"}`, 400, "must be positive"},
		{"POST", "/nodes", strings.Repeat(" ", maxBody+1) + "{}", 400, "too large"},
		{"POST", "/nodes/ghost/kill", "", 404, "no such simulated node: ghost"},
		{"POST", "/nodes/ghost/revive", "", 404, "no such simulated node"},
		{"DELETE", "/nodes/ghost", "", 404, "no such simulated node"},
		{"GET", "/nodes/ghost/kill", "", 405, ""},
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(b.String(), c.want) {
			t.Errorf("%s %s: got %d %q, want %d containing %q", c.method, c.path, resp.StatusCode, b.String(), c.status, c.want)
		}
	}
}

func TestStateTransitionsOfUnknownNodes(t *testing.T) {
	s := New(context.Background(), nil)
	for _, op := range []func(string) (NodeInfo, error){s.Kill, s.Partition, s.Revive} {
		if _, err := op("nope"); err == nil || statusOf(err) != http.StatusNotFound {
			t.Errorf("want not found, got %v", err)
		}
	}
}
