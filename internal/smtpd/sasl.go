package smtpd

import (
	"github.com/emersion/go-sasl"
)

// loginServer is the server side of the LOGIN SASL mechanism
// (draft-murchison-sasl-login-00; go-sasl has only the client side): the
// server asks "Username:" then "Password:", the client answers each. A
// client may send the username as the initial response (RFC 4954 section
// 4), as Python's smtplib does.
type loginServer struct {
	step     int
	username string
	check    func(username, password string) error
}

var _ sasl.Server = (*loginServer)(nil)

func newLoginServer(check func(username, password string) error) *loginServer {
	return &loginServer{check: check}
}

// Next implements sasl.Server.
func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if response == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
