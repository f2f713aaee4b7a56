// Package e2e holds the end-to-end tests of lb: they build the lb binary once, run it as a
// separate process in front of real backends on loopback (nginx processes, one per backend,
// and small Go TCP servers for what nginx cannot do) and check what clients see.
//
// The tests need nginx on the PATH (or in /usr/sbin). Without it they skip, except when
// CI=true, where they fail. When the tests are built with -race, lb is built with -race too,
// so a data race in lb fails the test that triggered it (lb then exits with status 66).
package e2e
