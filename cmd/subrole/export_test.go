package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/subrole/subrole/store"
)

// TestExportFileIsPrivate: an export holds every member's Twitch account,
// so the file is readable by its owner only, whatever was at the temporary
// name beside it (an export that failed half-way, a file someone put
// there), and the temporary file does not stay behind.
func TestExportFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "subrole.db")
	db, err := store.Open(data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	getenv := func(k string) string {
		switch k {
		case "SUBROLE_DATA":
			return data
		case "SUBROLE_ADMIN_SOCKET":
			return "off"
		}
		return ""
	}
	out := filepath.Join(dir, "links.csv")
	if err := os.WriteFile(out+".tmp", []byte("left over\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := exportCmd(context.Background(), []string{out}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("export: %v\n%s", err, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("the export is %v, want -rw-------", perm)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if name := e.Name(); name != "links.csv" && name != "subrole.db" && name != "links.csv.tmp" {
			t.Errorf("left behind: %s", name)
		}
	}
}
