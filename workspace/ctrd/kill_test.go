package ctrd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// childEnv carries the spec to the child agent of TestSurvivesAgentKill.
const childEnv = "MESHWORK_CTRD_CHILD"

type childArgs struct {
	Machine, Dir string
	Spec         ctrd.Spec
}

// TestSurvivesAgentKill: an agent process started inside the workmachine's namespace (as
// nsenter --net does) runs a workspace and is killed -9; the workspace keeps running and a
// new runtime adopts it with the same pid.
func TestSurvivesAgentKill(t *testing.T) {
	e := newEnv(t)
	s := spec("hank", 15)
	args, _ := json.Marshal(childArgs{Machine: e.rt.Machine, Dir: e.rt.Dir, Spec: s})
	e.deleteOnCleanup(e.rt, s)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/var/run/netns/"+e.host.Netns(), os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+string(args))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := readChildPID(t, bufio.NewScanner(out))
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	st := e.run(s) // registers cleanup and adopts
	if st.PID != pid {
		t.Errorf("adopted pid %d, the killed agent started %d", st.PID, pid)
	}
	if got := e.hello(s.IPv4); got != "hello from "+s.Name {
		t.Errorf("after the agent's death: %q", got)
	}
}

func readChildPID(t *testing.T, sc *bufio.Scanner) int {
	t.Helper()
	for sc.Scan() {
		var pid int
		if _, err := fmt.Sscanf(sc.Text(), "PID %d", &pid); err == nil {
			return pid
		}
		t.Logf("child: %s", sc.Text())
	}
	t.Fatalf("child agent printed no PID line (%v)", sc.Err())
	return 0
}

// childAgent is the child of TestSurvivesAgentKill: it runs the workspace raw describes,
// prints its PID and waits to be killed.
func childAgent(raw string) int {
	var a childArgs
	if err := json.NewDecoder(strings.NewReader(raw)).Decode(&a); err != nil {
		fmt.Println(err)
		return 1
	}
	rt := &ctrd.Runtime{Namespace: testNamespace, Machine: a.Machine, Identity: "id-" + a.Machine, Dir: a.Dir}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := rt.Run(ctx, a.Spec, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Printf("PID %d\n", st.PID)
	<-ctx.Done() // until killed
	return 0
}
