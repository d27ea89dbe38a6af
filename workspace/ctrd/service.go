package ctrd

import (
	"net/netip"

	"meshwork.dev/workspace/compose"
)

// ServiceSpec is what one environment service should be: a container of its own, in a
// network namespace of its own with the service's mesh addresses, made from its compose
// definition. Services and workspaces share the Runtime (its containerd, images and network
// plumbing) but never each other's methods: List lists only workspaces, ListServices only
// services.
type ServiceSpec struct {
	ID      string       // unique on the machine: the environment's ID and the service's name, "e_3f….redis"
	Env     string       // the environment's name
	EnvID   string       // the environment's ID: its named volumes live under it, so a new environment of an old name starts empty
	Service compose.Spec // as compose.Load reads it, every config's and secret's Content filled in
	IPv4    netip.Addr   // required
	IPv6    netip.Addr
	Hosts   []HostEntry // /etc/hosts: the environment's services by name, hostname and aliases
	DNS     []string    // nameservers for resolv.conf
	Search  []string    // search domains: <env>.<domain>, <domain>
	// Allow are the addresses that may connect to the service besides those in Hosts (the
	// environment's own services): nftables in its namespace drops the rest.
	Allow []netip.Prefix
	// Hash identifies the definition: a container made from another hash is recreated.
	Hash string
}

// HostEntry is one line of a service's /etc/hosts.
type HostEntry struct {
	Addr  netip.Addr
	Names []string
}

// ServiceStatus is a service's state as containerd sees it.
type ServiceStatus struct {
	ID, Env, EnvID, Name string
	Hash                 string // the definition the container was made from
	State                State  // running, stopped (a task that exited: see ExitCode) or failed
	ExitCode             int
	PID                  int
}
