package scenario

import (
	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/sim"
	"github.com/epost-mail/epost/internal/wire"
)

// Pinger is the engine's calibration protocol: every Period it pings a
// random peer and it answers pings with pongs. It exercises timers, both
// delivery modes, the wire codec and per-node randomness, and nothing else,
// so the engine's own cost can be measured apart from any real protocol.
type Pinger struct {
	env      env.Env
	peers    []env.Addr
	period   env.Duration
	reliable bool

	// Pongs counts answers received; Fails counts reliable sends reported
	// unreachable; RTTSum adds up measured round trips.
	Pongs, Fails int
	RTTSum       env.Duration
}

// StartPinger returns a sim.StartFunc booting a Pinger that pings peers
// every period (reliably or not). Each booted Pinger is passed to booted,
// if not nil.
func StartPinger(peers []env.Addr, period env.Duration, reliable bool, booted func(*Pinger)) sim.StartFunc {
	return func(e env.Env) sim.Process {
		p := &Pinger{env: e, peers: peers, period: period, reliable: reliable}
		if booted != nil {
			booted(p)
		}
		e.Clock.AfterFunc(env.Duration(e.Rand.IntN(int(period))), p.tick)
		return p
	}
}

func (p *Pinger) tick() {
	to := p.peers[p.env.Rand.IntN(len(p.peers))]
	msg := wire.MustMarshal(wire.Envelope{Version: wire.Version, Type: wire.TypePing,
		Body: wire.MustMarshal(wire.Ping{Nonce: p.env.Rand.Uint64(), Sent: int64(p.env.Clock.Now())})})
	if p.reliable {
		p.env.Net.SendReliable(to, msg, func(err error) {
			p.Fails++
			p.env.Log.Info("ping failed", "to", string(to), "err", err)
		})
	} else {
		p.env.Net.Send(to, msg)
	}
	p.env.Clock.AfterFunc(p.period, p.tick)
}

// Receive handles a Ping or a Pong; anything else is dropped.
func (p *Pinger) Receive(from env.Addr, msg []byte) {
	e, err := wire.DecodeEnvelope(msg)
	if err != nil {
		p.env.Log.Debug("dropped malformed message", "from", string(from), "err", err)
		return
	}
	switch e.Type {
	case wire.TypePing:
		var m wire.Ping
		if wire.DecodeBody(e, wire.TypePing, &m) != nil {
			return
		}
		out, _ := wire.Encode(wire.TypePong, wire.Pong(m))
		p.env.Net.Send(from, out)
	case wire.TypePong:
		var m wire.Pong
		if wire.DecodeBody(e, wire.TypePong, &m) != nil {
			return
		}
		rtt := p.env.Clock.Now().Sub(env.Time(m.Sent))
		p.Pongs++
		p.RTTSum += rtt
		p.env.Log.Debug("pong", "from", string(from), "rtt", int64(rtt))
	}
}
