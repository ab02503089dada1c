package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newVersionCommand is kubectl version: the client's version, and the
// server's when one is configured.
func newVersionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Args:  cobra.NoArgs,
	}
	flags := addClientFlags(cmd)
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		fmt.Fprintf(cmd.OutOrStdout(), "Client Version: %s\n", version)
		if clientOnly {
			return nil
		}
		cfg, err := flags.clientConfig(cmd)
		if err != nil || len(cfg.Servers) == 0 {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		info, err := c.ServerVersion(cmd.Context())
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Server Version: %s\n", info.GitVersion)
		return nil
	}
	return cmd
}
