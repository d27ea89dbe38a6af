package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"meshwork.dev/coord/api"
)

// regOp is an operation on the register the test keeps in the policy text.
type regOp struct {
	write bool
	value int
}

var registerModel = porcupine.Model{
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regOp)
		if in.write {
			return true, in.value
		}
		return output.(int) == state.(int), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regOp)
		if in.write {
			return fmt.Sprintf("write(%d)", in.value)
		}
		return fmt.Sprintf("read() → %v", output)
	},
}

// TestCoordLinearizable runs a concurrent register workload through all three replicas
// (writes through any replica, linearizable reads) while the leader is killed and
// restarted and then cut off and healed, and checks the history with porcupine: every
// acknowledged write is kept and every read is explained by one order of the operations.
func TestCoordLinearizable(t *testing.T) {
	cl := newCoordLab(t)
	rs := cl.threeReplicas()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return cl.admin.DialContext(ctx, network, addr)
		},
	}}
	start := time.Now()
	since := func() int64 { return int64(time.Since(start)) }

	var mu sync.Mutex
	var history []porcupine.Operation
	var nextValue, acked, failed int
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for client := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(client), 7))
			for ctx.Err() == nil {
				r := rs[rng.IntN(len(rs))]
				op := porcupine.Operation{ClientId: client, Call: since()}
				if rng.IntN(2) == 0 {
					mu.Lock()
					nextValue++
					v := nextValue
					mu.Unlock()
					op.Input = regOp{write: true, value: v}
					err := writeRegister(hc, r, cl.token, v)
					op.Return = since()
					mu.Lock()
					if err != nil {
						op.Return = math.MaxInt64 // unknown outcome: it may take effect any time later
						failed++
					} else {
						acked++
					}
					history = append(history, op)
					mu.Unlock()
				} else {
					v, err := readRegister(hc, r, cl.token)
					if err != nil {
						continue // a failed read tells nothing
					}
					op.Input, op.Output, op.Return = regOp{}, v, since()
					mu.Lock()
					history = append(history, op)
					mu.Unlock()
				}
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			}
		}()
	}

	// The faults, one after another, while the clients run.
	time.Sleep(time.Second)
	old := cl.leader(rs[0])
	old.proc.Kill()
	time.Sleep(1500 * time.Millisecond)
	cl.start(old.name, "", "")
	time.Sleep(1500 * time.Millisecond)
	minority := cl.leader(rs[0])
	var others []*replicaHost
	for _, r := range rs {
		if r != minority {
			others = append(others, r)
		}
	}
	heal := minority.host.Cut(others[0].addr, others[1].addr)
	time.Sleep(2 * time.Second)
	heal()
	wg.Wait()

	t.Logf("%d operations: %d acknowledged writes, %d writes with unknown outcome", len(history), acked, failed)
	if acked < 20 {
		t.Fatalf("only %d writes acknowledged: the cluster was unavailable too long to check anything", acked)
	}
	res, _ := porcupine.CheckOperationsVerbose(registerModel, history, 60*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("history is not linearizable (%s)", res)
	}
}

func writeRegister(hc *http.Client, r *replicaHost, token string, v int) error {
	body, _ := json.Marshal(api.Policy{Text: fmt.Sprintf("// register %d\n{}", v)})
	req, _ := http.NewRequest("PUT", r.url()+"/v1/policy", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

func readRegister(hc *http.Client, r *replicaHost, token string) (int, error) {
	req, _ := http.NewRequest("GET", r.url()+"/v1/policy?consistency=linearizable", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	var p api.Policy
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return 0, err
	}
	if p.Text == "" {
		return 0, nil
	}
	line, _, _ := strings.Cut(p.Text, "\n")
	return strconv.Atoi(strings.TrimPrefix(line, "// register "))
}
