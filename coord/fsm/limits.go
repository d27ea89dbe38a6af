package fsm

import "net/netip"

// Caps on what a command may copy into the state: every replica holds it, every peer's map
// carries some of it, and it is kept until deleted. Each is far above what a real client
// sends (a Tailscale client reports a handful of endpoints; a Docker reference is at most
// 255 characters of name, 128 of tag and a digest).
const (
	MaxEndpoints = 64      // ip:port candidates a node reports
	MaxOS        = 64      // bytes of a node's OS name ("linux", "macOS", ...)
	MaxHostname  = 255     // bytes of a host name a machine registers with (a DNS name's most)
	MaxTags      = 32      // tags on an auth key or a node
	MaxImageRef  = 512     // bytes of an image reference
	MaxCPU       = 1024    // CPUs a workspace may ask for
	MaxMemory    = 1 << 44 // bytes of memory a workspace may ask for (16 TiB)
	MaxServices  = 64      // services in an environment (as the compose parser allows)
	MaxPorts     = 64      // ports of one service
	MaxKeyName   = 64      // bytes of an API key's name
	MaxEndpoint  = 80      // bytes of one endpoint: "[IPv6%zone]:port"
	MaxCommand   = 4096    // bytes of an SSH session's command line kept in the audit log
	maxKeyText   = 128     // bytes of a node, machine or disco key ("nodekey:" and 64 hex digits)
)

// capErr says which cap a value is over, and by how much.
func capErr(what string, n, limit int) error {
	return errorf(CodeInvalid, "%s: %d is over the limit of %d", what, n, limit)
}

func checkTags(tags []string) error {
	if len(tags) > MaxTags {
		return capErr("tags", len(tags), MaxTags)
	}
	return nil
}

// checkEndpoints refuses more endpoints than MaxEndpoints and any that is not ip:port.
func checkEndpoints(eps []string) error {
	if len(eps) > MaxEndpoints {
		return capErr("endpoints", len(eps), MaxEndpoints)
	}
	for _, ep := range eps {
		if len(ep) > MaxEndpoint {
			return capErr("bytes of an endpoint", len(ep), MaxEndpoint)
		}
		if _, err := netip.ParseAddrPort(ep); err != nil {
			return errorf(CodeInvalid, "endpoint %q: want ip:port", ep)
		}
	}
	return nil
}

func checkLen(what, s string, limit int) error {
	if len(s) > limit {
		return capErr("bytes of "+what, len(s), limit)
	}
	return nil
}

// firstErr returns the first error of errs, or nil.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkSizes checks a node's reported data against the caps.
func (n *Node) checkSizes() error {
	return firstErr(checkTags(n.Tags), checkEndpoints(n.Endpoints), checkLen("the OS name", n.OS, MaxOS),
		checkLen("a key", n.MachineKey, maxKeyText), checkLen("a key", n.NodeKey, maxKeyText), checkLen("a key", n.DiscoKey, maxKeyText))
}

func (u *NodeUpdate) checkSizes() error {
	return firstErr(checkEndpoints(u.Endpoints), checkLen("the OS name", u.OS, MaxOS),
		checkLen("a key", u.NodeKey, maxKeyText), checkLen("a key", u.DiscoKey, maxKeyText))
}

func (j *Join) checkSizes() error {
	return firstErr(checkLen("the host name", j.Hostname, MaxHostname), checkLen("the OS name", j.OS, MaxOS),
		checkLen("a key", j.MachineKey, maxKeyText), checkLen("a key", j.NodeKey, maxKeyText))
}

func (w *Workspace) checkSizes() error {
	if w.CPU > MaxCPU {
		return errorf(CodeInvalid, "workspace %q: %g CPUs is over the limit of %d", w.Name, w.CPU, MaxCPU)
	}
	if w.MemoryBytes > MaxMemory {
		return errorf(CodeInvalid, "workspace %q: %d bytes of memory is over the limit of %d (16 TiB)", w.Name, w.MemoryBytes, int64(MaxMemory))
	}
	return checkLen("the image reference", w.Image, MaxImageRef)
}

func (e *Environment) checkSizes() error {
	if len(e.Services) > MaxServices {
		return capErr("services", len(e.Services), MaxServices)
	}
	for _, s := range e.Services {
		if len(s.Ports) > MaxPorts {
			return capErr("ports of service "+s.Name, len(s.Ports), MaxPorts)
		}
		if err := checkLen("the image reference of service "+s.Name, s.Image, MaxImageRef); err != nil {
			return err
		}
	}
	return nil
}
