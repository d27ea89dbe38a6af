// Command meshctl is Meshwork's one binary; see meshwork.dev/ctl.
package main

import "meshwork.dev/ctl"

func main() { ctl.Main() }
