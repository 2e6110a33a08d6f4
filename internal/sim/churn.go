package sim

import (
	"math"

	"github.com/epost-mail/epost/internal/env"
)

// Churn drives hosts up and down with exponentially distributed session
// and down times, the usual model for peer-to-peer membership.
type Churn struct {
	// MeanSession is the mean time a host stays up.
	MeanSession env.Duration
	// MeanDowntime is the mean time a crashed host stays down.
	MeanDowntime env.Duration
	// Until stops the churn: no crash or restart is scheduled after it.
	Until env.Time
	// OnCrash and OnRestart, if set, run after the engine crashed or
	// restarted a host, for the scenario's bookkeeping.
	OnCrash, OnRestart func(HostID)
}

// StartChurn applies c to hosts: each live host gets a crash drawn from the
// session distribution, each down host a restart from the downtime one.
func (s *Sim) StartChurn(c Churn, hosts []HostID) {
	for _, h := range hosts {
		s.scheduleChurn(c, h)
	}
}

// Exp draws an exponentially distributed duration with the given mean from
// the engine's generator.
func (s *Sim) Exp(mean env.Duration) env.Duration {
	return env.Duration(-math.Log(1-s.rng.Float64()) * float64(mean))
}

func (s *Sim) scheduleChurn(c Churn, h HostID) {
	up := s.hosts[h].up
	mean := c.MeanDowntime
	if up {
		mean = c.MeanSession
	}
	at := s.now.Add(s.Exp(mean))
	if c.Until != 0 && at > c.Until {
		return
	}
	s.At(at, func() {
		if s.hosts[h].up != up {
			// Someone else changed the host meanwhile; resume from its state.
			s.scheduleChurn(c, h)
			return
		}
		if up {
			s.Crash(h)
			if c.OnCrash != nil {
				c.OnCrash(h)
			}
		} else {
			s.Restart(h)
			if c.OnRestart != nil {
				c.OnRestart(h)
			}
		}
		s.scheduleChurn(c, h)
	})
}
