package ctl

import (
	"context"
	"fmt"
	"time"

	"meshwork.dev/coord"
	"meshwork.dev/coord/replica"
	"meshwork.dev/overlay/meshdns"
)

var coordCmd = &command{
	name:    "coord",
	summary: "Run a coord replica (control plane: Raft state + admin API)",
	usage:   "--state DIR --http ADDR --cluster ADDR [--join URL --join-token TOKEN] [--bootstrap-expect N] [--tls-cert FILE --tls-key FILE]",
	examples: []string{
		"meshctl coord --state /var/lib/meshwork/c1 --http 10.0.0.1:8080 --cluster 10.0.0.1:7000",
		"meshctl coord --state /var/lib/meshwork/c2 --http 10.0.0.2:8080 --cluster 10.0.0.2:7000 --join https://10.0.0.1:8080 --join-token mj_...",
	},
	run: runCoord,
}

func runCoord(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var cfg coord.Config
	fs.StringVar(&cfg.StateDir, "state", "", "state `dir`ectory (Raft log, snapshots, TLS identity); required")
	fs.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "admin API listen `address`")
	fs.StringVar(&cfg.ClusterAddr, "cluster", "", "UDP `address` for coord-to-coord traffic, reachable by the other replicas; required")
	fs.StringVar(&cfg.ID, "id", "", "replica `name` (default: the host name; kept in the state directory)")
	fs.StringVar(&cfg.Join, "join", "", "admin API `URL` of a member to join on first start (ignored once there is state)")
	fs.StringVar(&cfg.JoinToken, "join-token", "", "the cluster's join `token` (meshctl cluster token)")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 1, "refuse writes until this many `replicas` are members")
	fs.StringVar(&cfg.SecretKeyFile, "secret-key-file", "", "`file` with the 32-byte key that encrypts secrets at rest (or env MESHWORK_SECRET_KEY)")
	fs.StringVar(&cfg.Domain, "domain", meshdns.DefaultDomain, "the mesh's DNS `domain`")
	fs.DurationVar(&cfg.EphemeralGrace, "ephemeral-grace", 30*time.Second, "how long an ephemeral node may be away before it is removed")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the admin API over TLS with this certificate `file`")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "the TLS certificate's key `file`")
	fs.BoolVar(&cfg.InsecureJoin, "insecure-join", false, "labs only: join, and admit replicas, over plain HTTP between machines (the cluster's CA key then crosses the network in clear text)")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	if cfg.StateDir == "" || cfg.ClusterAddr == "" {
		return usageErrorf("coord: --state and --cluster are required; run 'meshctl coord --help'")
	}
	if cfg.Join != "" && cfg.JoinToken == "" {
		return usageErrorf("coord: --join needs --join-token (print it on a member with 'meshctl cluster token')")
	}
	if cfg.Join != "" {
		if err := replica.CheckJoinURL(cfg.Join, cfg.InsecureJoin); err != nil {
			return usageErrorf("coord: %v", err)
		}
	}
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(e.stderr, format+"\n", args...) }
	return coord.Run(ctx, cfg)
}
