// Package deptest holds no code, only tests that keep the layering of
// DESIGN.md by construction: protocol cores import nothing that reaches
// the wall clock, the network, the disk, goroutine synchronisation or a
// global random source, and lower layers never import higher ones.
package deptest
