package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/coreos/go-systemd/v22/daemon"
)

// readyPollPeriod is how often NotifySystemd checks readiness before
// READY=1.
const readyPollPeriod = 200 * time.Millisecond

// Ready returns nil once the sync loop has run a pass after the state was
// restored from the store and every source reported (a set, or an error:
// an unreachable URL must not hold the node back forever), and for as long
// as the loop stays healthy.
func (a *Agent) Ready() error {
	if err := a.Healthy(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.synced {
		return fmt.Errorf("agent has not synced every source yet: %w", errdefs.ErrUnavailable)
	}
	return nil
}

// sourcesReportedLocked says whether every source delivered a set or an
// error since the agent started.
func (a *Agent) sourcesReportedLocked() bool {
	for _, s := range a.sources {
		if !s.delivered && s.err == nil {
			return false
		}
	}
	return true
}

// NotifySystemd speaks systemd's notify protocol for the agent: READY=1
// once a.Ready() is nil, then WATCHDOG=1 every half WatchdogSec for as long
// as a.Healthy() is nil. Healthy goes stale when the sync loop stops
// ticking, so a hung loop stops the pings and systemd restarts the agent.
// Outside systemd (no NOTIFY_SOCKET) it returns at once; otherwise it
// returns when ctx ends.
func NotifySystemd(ctx context.Context, a HealthChecker, logger *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	tick := time.NewTicker(readyPollPeriod)
	for a.Ready() != nil {
		select {
		case <-ctx.Done():
			tick.Stop()
			return
		case <-tick.C:
		}
	}
	tick.Stop()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		logger.Warn("sd_notify READY=1 failed", "err", err)
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog settings unreadable; no watchdog pings", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	// systemd's advice: ping at half the timeout, so one late tick is
	// not fatal.
	tick = time.NewTicker(interval / 2)
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := a.Healthy(); err != nil {
			if err.Error() != lastErr {
				logger.Error("agent unhealthy; withholding watchdog pings", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		if lastErr != "" {
			logger.Info("agent healthy again; watchdog pings resume")
			lastErr = ""
		}
		if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			logger.Warn("sd_notify WATCHDOG=1 failed", "err", err)
		}
	}
}
