//go:build race

package coord

// raceEnabled: the race detector slows this process's three replicas some tenfold.
const raceEnabled = true
