package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The recorded data of docs/img renders, and the PNG decodes.
func TestRenderRecorded(t *testing.T) {
	out := filepath.Join(t.TempDir(), "d.png")
	if err := run(filepath.Join("..", "..", "docs", "img", "dashboard-data.json"), "", 0, 0, "", out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 1000 {
		t.Fatalf("image too small: %v", img.Bounds())
	}
}

// -prometheus runs every panel's query against /api/v1/query_range and
// -save writes what it got.
func TestFetchFromPrometheus(t *testing.T) {
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query_range" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query().Get("query")
		seen[q] = true
		now := float64(time.Now().Unix())
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{
			"resultType": "matrix",
			"result": []any{map[string]any{"metric": map[string]string{"node": "a@b", "phase": "phase2", "kind": "mismatched"},
				"values": []any{[]any{now - 60, "1"}, []any{now, "1"}}}}}})
	}))
	defer srv.Close()
	dir := t.TempDir()
	if err := run("", srv.URL, time.Hour, 5*time.Second, filepath.Join(dir, "d.json"), filepath.Join(dir, "d.png")); err != nil {
		t.Fatal(err)
	}
	for k, q := range Queries {
		if !seen[q] {
			t.Errorf("panel %s: query %q not sent", k, q)
		}
	}
	d, err := load(filepath.Join(dir, "d.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Queries) != len(Queries) {
		t.Fatalf("saved %d queries, want %d", len(d.Queries), len(Queries))
	}
	if err := run("", "", 0, 0, "", filepath.Join(dir, "x.png")); err == nil {
		t.Fatal("no input must be an error")
	}
}
