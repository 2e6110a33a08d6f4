package gateway

// NewWithMailer makes a server over a fake of POST (Inject and
// LookupUser), for the tests.
func NewWithMailer(cfg Config, m interface {
	Inject(gw string, recipients []string, msg []byte, done func(error))
	LookupUser(addr string, done func(bool, error))
}) *Server {
	return newServer(cfg, func() mailer { return m })
}

// Stamp is stamp, for the tests.
var Stamp = stamp
