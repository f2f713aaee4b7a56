//go:build race

package e2e

// raceEnabled builds lb with -race when the tests themselves run with -race.
const raceEnabled = true
