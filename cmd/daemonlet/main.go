// Command daemonlet is the node agent for daemon pods and, later, its
// server and kubectl-like CLI: one binary, a cobra command tree that only
// wires flags to the packages below it.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, errorMessage(err))
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "daemonlet",
		Short:         "A mini-kubelet for DaemonSet pods on containerd",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newLogDriverCommand())
	root.AddCommand(newAgentCommand())
	root.AddCommand(newServerCommand())
	root.AddCommand(newApplyCommand())
	root.AddCommand(newCreateCommand())
	root.AddCommand(newGetCommand())
	root.AddCommand(newDescribeCommand())
	root.AddCommand(newDeleteCommand())
	root.AddCommand(newRolloutCommand())
	root.AddCommand(newLabelCommand())
	root.AddCommand(newTaintCommand())
	root.AddCommand(newVersionCommand())
	return root
}
