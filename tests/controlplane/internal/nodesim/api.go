package nodesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxBody bounds a control request body; a node description is a few hundred bytes.
const maxBody = 64 << 10

// registerTimeout bounds the API calls that register one node.
const registerTimeout = 30 * time.Second

// Handler serves the simulator's control API (JSON over HTTP on loopback):
//
//	GET    /healthz                 -> "ok"
//	GET    /nodes                   -> [NodeInfo]
//	POST   /nodes                   NodeSpec -> NodeInfo (201; 409 if it exists; 400 if invalid)
//	POST   /nodes/{name}/kill       -> NodeInfo (heartbeats stop: power loss)
//	POST   /nodes/{name}/partition  -> NodeInfo (heartbeats stop: network loss)
//	POST   /nodes/{name}/revive     -> NodeInfo
//	DELETE /nodes/{name}            -> 204
//
// Errors are {"error": "..."} with a 4xx/5xx status.
func (s *Simulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, s.List())
	})
	mux.HandleFunc("POST /nodes", func(w http.ResponseWriter, r *http.Request) {
		var spec NodeSpec
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			fail(w, http.StatusBadRequest, fmt.Errorf("node description: %w", err))
			return
		}
		// Not the request's context: a client that goes away must not leave a half-registered node.
		ctx, cancel := context.WithTimeout(s.ctx, registerTimeout)
		defer cancel()
		info, err := s.Add(ctx, spec)
		if err != nil {
			fail(w, statusOf(err), err)
			return
		}
		reply(w, http.StatusCreated, info)
	})
	for verb, op := range map[string]func(string) (NodeInfo, error){
		"kill": s.Kill, "partition": s.Partition, "revive": s.Revive,
	} {
		mux.HandleFunc("POST /nodes/{name}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			info, err := op(r.PathValue("name"))
			if err != nil {
				fail(w, statusOf(err), err)
				return
			}
			reply(w, http.StatusOK, info)
		})
	}
	mux.HandleFunc("DELETE /nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Remove(r.Context(), r.PathValue("name")); err != nil {
			fail(w, statusOf(err), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// statusOf maps a simulator error to an HTTP status: unknown node 404, duplicate 409, API failure 502,
// anything else (a bad description) 400.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	case errors.Is(err, errAPI):
		return http.StatusBadGateway
	default:
		return http.StatusBadRequest
	}
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func fail(w http.ResponseWriter, status int, err error) {
	reply(w, status, map[string]string{"error": err.Error()})
}
