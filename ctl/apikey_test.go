package ctl

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord"
)

// TestAPIKeyRotate: meshctl apikey rotate replaces the first admin's key, which never
// expires: the new key works, the old one is refused.
func TestAPIKeyRotate(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clusterAddr := udp.LocalAddr().String()
	udp.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- coord.Run(ctx, coord.Config{ID: "c1", StateDir: state, HTTPAddr: httpAddr, ClusterAddr: clusterAddr, Logf: t.Logf})
	}()
	defer func() {
		cancel()
		<-done
	}()
	var admin string
	for deadline := time.Now().Add(20 * time.Second); admin == ""; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(state, "admin.key"))
		admin = strings.TrimSpace(string(b))
		if time.Now().After(deadline) {
			t.Fatal("coord did not write admin.key")
		}
	}
	meshctl := func(token string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		args = append([]string{"--coord", "http://" + httpAddr, "--token", token}, args...)
		err := Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	out, err := meshctl(admin, "apikey", "rotate")
	if err != nil {
		t.Fatalf("apikey rotate: %v\n%s", err, out)
	}
	next := regexp.MustCompile(`export MESHCTL_TOKEN=(mk_\S+)`).FindStringSubmatch(out)
	if next == nil {
		t.Fatalf("apikey rotate printed no new key:\n%s", out)
	}
	if out, err := meshctl(admin, "user", "list"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the old key after rotating it: %v\n%s", err, out)
	}
	if out, err := meshctl(next[1], "user", "list"); err != nil || !strings.Contains(out, "admin") {
		t.Errorf("the new key: %v\n%s", err, out)
	}
}
