package main

import (
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/spf13/cobra"
)

// newLogDriverCommand is what containerd's shim runs for each container:
// it writes the container's output in the CRI log format, and outlives the
// agent.
func newLogDriverCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "log-driver FILE",
		Short:  "Write a container's output to FILE in the CRI log format (run by containerd's shim)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runtime.RunLogDriver(args[0])
		},
	}
}
