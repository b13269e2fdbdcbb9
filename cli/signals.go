package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// stopper turns SIGINT and SIGTERM into stops. Before a runner is open,
// the first signal cancels the returned context (opening waits no more).
// Once one is (setRunner), the first signal stops it softly: running
// tasks may finish within grace. A second signal, or the end of the
// grace, stops it hard. stop(why) acts as a signal does, for a stop that
// no signal brings (pcd run's output was closed). release stops listening.
//
// stoppable is a runner that stops softly, then hard once ctx ends.
type stoppable interface {
	Stop(ctx context.Context) error
}

func stopper(ctx context.Context, grace time.Duration, log *slog.Logger) (opening context.Context, setRunner func(stoppable), stop func(why string), release func()) {
	opening, cancel := context.WithCancel(ctx)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	runners := make(chan stoppable, 1)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var (
			r       stoppable
			hard    context.CancelFunc
			timeout <-chan time.Time
			stops   = make(chan struct{})
		)
		for {
			select {
			case <-done:
				if hard != nil {
					hard()
					<-stops
				}
				return
			case r = <-runners:
			case sig := <-sigs:
				switch {
				case r == nil:
					log.Info("stopping", "signal", sig.String())
					cancel()
				case hard == nil:
					log.Info("stopping: running tasks may finish", "signal", sig.String(), "grace", grace)
					var stopCtx context.Context
					stopCtx, hard = context.WithCancel(context.Background())
					go func() {
						defer close(stops)
						_ = r.Stop(stopCtx)
					}()
					timer := time.NewTimer(grace)
					defer timer.Stop()
					timeout = timer.C
				default:
					log.Info("second signal: interrupting running tasks", "signal", sig.String())
					hard()
				}
			case <-timeout:
				log.Info("grace period over: interrupting running tasks")
				hard()
				timeout = nil
			}
		}
	}()
	stop = func(why string) {
		select {
		case sigs <- stopReason(why):
		default: // two stops are pending already
		}
	}
	return opening, func(r stoppable) { runners <- r }, stop, func() {
		signal.Stop(sigs)
		close(done)
		<-stopped
		cancel()
	}
}

// stopReason is a stop that no signal brought, told as a signal.
type stopReason string

func (s stopReason) String() string { return string(s) }
func (stopReason) Signal()          {}
