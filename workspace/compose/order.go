package compose

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Step is one service to start, once each service in Wait has met its condition.
type Step struct {
	Service string
	Wait    map[string]Condition
}

// StartOrder returns p's services in an order to start them: every service comes after
// everything it depends on (a topological order; ties by name). A cycle is an error naming it.
func StartOrder(p *Project) ([]Step, error) {
	deps := map[string]map[string]Condition{}
	for _, s := range p.Services {
		deps[s.Name] = s.DependsOn
	}
	var order []Step
	done := map[string]bool{}
	for len(order) < len(p.Services) {
		progress := false
		for _, s := range p.Services { // sorted by name
			if done[s.Name] || !allDone(s.DependsOn, done) {
				continue
			}
			done[s.Name] = true
			order = append(order, Step{Service: s.Name, Wait: maps.Clone(s.DependsOn)})
			progress = true
			break // restart so ties go by name
		}
		if !progress {
			cycle := findCycle(deps, done)
			return nil, refusal(cycle[0], "depends_on", fmt.Sprintf("a dependency cycle: %s", strings.Join(cycle, " -> ")),
				"remove one of these dependencies", cycle[1])
		}
	}
	return order, nil
}

func allDone(deps map[string]Condition, done map[string]bool) bool {
	for d := range deps {
		if !done[d] {
			return false
		}
	}
	return true
}

// findCycle follows dependencies among the services not done until one repeats.
func findCycle(deps map[string]map[string]Condition, done map[string]bool) []string {
	var start string
	for _, n := range slices.Sorted(maps.Keys(deps)) {
		if !done[n] {
			start = n
			break
		}
	}
	seen := map[string]int{}
	var path []string
	for n := start; ; {
		if i, ok := seen[n]; ok {
			return append(path[i:], n)
		}
		seen[n] = len(path)
		path = append(path, n)
		for _, d := range slices.Sorted(maps.Keys(deps[n])) {
			if !done[d] {
				n = d
				break
			}
		}
	}
}
