package compose

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// defaultCaps is Docker's default capability set: cap_add may repeat these, not go beyond.
var defaultCaps = map[string]bool{
	"CHOWN": true, "DAC_OVERRIDE": true, "FSETID": true, "FOWNER": true, "MKNOD": true,
	"NET_RAW": true, "SETGID": true, "SETUID": true, "SETFCAP": true, "SETPCAP": true,
	"NET_BIND_SERVICE": true, "SYS_CHROOT": true, "KILL": true, "AUDIT_WRITE": true,
}

// refuse returns the first key of sc that Meshwork does not run.
func refuse(name string, sc types.ServiceConfig) error {
	if !validLabel(name) {
		return refusal(name, "services", "the name is not a DNS label",
			fmt.Sprintf("use 1-63 lower-case letters, digits and '-' (it becomes %s.<env> on the mesh)", strings.ToLower(name)))
	}
	switch {
	case sc.Build != nil:
		return refusal(name, "build", "Meshwork does not build, so there is no image to run", "push the image to a registry and set image:")
	case sc.Image == "":
		return refusal(name, "image", "the service has no image", "set image:")
	case sc.NetworkMode != "":
		return refusal(name, "network_mode", "each service has its own network namespace on the mesh", "remove network_mode; services reach each other by name")
	case sc.Privileged:
		return refusal(name, "privileged", "a privileged container owns the workmachine", "remove privileged and add only the capabilities it needs under cap_add")
	case sc.Pid == "host":
		return refusal(name, "pid", "the host's process namespace is the workmachine's", "remove pid: host")
	case sc.Ipc == "host":
		return refusal(name, "ipc", "the host's IPC namespace is the workmachine's", "remove ipc: host (ipc: shareable and private work)")
	case len(sc.Devices) > 0:
		return refusal(name, "devices", "the workmachine's devices are not the environment's", "remove devices")
	case len(sc.EnvFiles) > 0:
		return refusal(name, "env_file", "coord has no files of yours", "write the variables under environment:")
	}
	for _, c := range sc.CapAdd {
		if cc := strings.TrimPrefix(strings.ToUpper(c), "CAP_"); !defaultCaps[cc] {
			return refusal(name, "cap_add", fmt.Sprintf("%s is beyond Docker's default capability set", c), "remove it; only the default capabilities may be added back", c)
		}
	}
	for i, v := range sc.Volumes {
		if err := refuseVolume(name, i, v); err != nil {
			return err
		}
	}
	return nil
}

// refuseVolume refuses volume i of service name if it is not a named volume or tmpfs.
func refuseVolume(name string, i int, v types.ServiceVolumeConfig) error {
	switch {
	case v.Type == types.VolumeTypeBind || path.IsAbs(v.Source) || strings.HasPrefix(v.Source, "."):
		return refusal(name, "volumes", fmt.Sprintf("%s is a host bind mount: coord has no files of yours", v.Target),
			fmt.Sprintf("use a named volume (data:%s, with data under the top-level volumes:) or a config with content:", v.Target), strconv.Itoa(i))
	case v.Type != types.VolumeTypeVolume && v.Type != types.VolumeTypeTmpfs:
		return refusal(name, "volumes", fmt.Sprintf("%s: volumes of type %s are not run", v.Target, v.Type), "use a named volume or tmpfs", strconv.Itoa(i))
	}
	return nil
}
