package imapd

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// go-imap (v2.0.0-beta.8) mishandles two kinds of bad input, and no
// option or hook of its own reaches them:
//
//   - A literal over 4 KiB outside APPEND: it declines to buffer it but
//     drops that answer, goes on reading the command line, and the client,
//     which waits for a "+" that never comes, gets NO [SERVERBUG] only
//     when the read deadline passes (30 s before login, 35 min after).
//   - A mailbox name that is not UTF-8 or valid modified UTF-7: its
//     decoder's error becomes NO [SERVERBUG] Internal server error; as a
//     literal, go-imap also takes the rest of the line for a new command,
//     fails to parse it and hangs up.
//
// cmdWatch follows the client's command lines and literals as they pass
// through the connection (a watchedConn) and answers both itself. The
// first line of a command asking for an oversized synchronizing literal
// is kept from go-imap and answered NO [TOOBIG]: the client sends no
// literal, and the session goes on. An oversized literal later in a
// command, or a non-synchronizing one (whose bytes are already on their
// way), is answered BAD [TOOBIG] and the connection closed, as RFC 7888
// section 4 allows. A NO [SERVERBUG] to a command whose mailbox names may
// be undecodable is rewritten to BAD [CLIENTBUG] with the reason, and the
// rest of a line after an undecodable literal name is not passed on.
//
// On implicit-TLS connections the watch sits above TLS (ServeTLS). go-imap
// does STARTTLS itself, beneath which the watch sees only ciphertext: it
// stands aside from STARTTLS on, and go-imap's own answers stand.
type cmdWatch struct {
	off      bool            // after STARTTLS: ciphertext, nothing to read
	line     []byte          // the current line, held back until its end
	long     bool            // the current line outgrew maxHeld and passes unexamined
	lit      int64           // bytes of a literal still to pass
	cont     bool            // lit is a synchronizing literal go-imap has not asked for yet
	litBuf   []byte          // a mailbox command's literal, checked once whole
	tag      string          // the command in progress ("" between commands)
	cmd      string          // its name, upper case, "UID " included
	badName  bool            // its mailbox arguments may be invalid (go-imap answers NO [SERVERBUG])
	skip     bool            // drop the rest of the line (see endLiteral)
	answered bool            // go-imap has answered the command in progress
	bad      map[string]bool // tags of finished commands with badName, until answered

	pending []byte // bytes for go-imap
	rest    []byte // bytes received after a refusal, examined once it is written
	reply   string // a refusal to write before go-imap reads on
	hangUp  bool   // close the connection after reply
}

const (
	// maxLiteral is go-imap's limit on a literal outside APPEND.
	maxLiteral = 4096
	// maxHeld bounds a held-back line; a longer one passes unexamined
	// (go-imap refuses a command over 50 KiB anyway).
	maxHeld = 64 << 10
	// maxBad bounds the tags remembered for rewriting.
	maxBad = 64
)

// mailboxCmds are the commands whose string arguments are mailbox names
// or patterns (APPEND's message literal aside).
var mailboxCmds = map[string]bool{
	"CREATE": true, "DELETE": true, "RENAME": true, "SELECT": true, "EXAMINE": true, "STATUS": true,
	"SUBSCRIBE": true, "UNSUBSCRIBE": true, "LIST": true, "LSUB": true, "APPEND": true,
	"COPY": true, "MOVE": true, "UID COPY": true, "UID MOVE": true,
}

// feed examines bytes from the client and queues what go-imap may read.
// After a refusal it stops: the rest waits in w.rest until the reply is
// written, so that replies keep the order of the commands.
func (w *cmdWatch) feed(b []byte) {
	for len(b) > 0 && w.reply == "" {
		switch {
		case w.off:
			w.pending = append(w.pending, b...)
			return
		case w.lit > 0:
			n := int(min(w.lit, int64(len(b))))
			w.pending = append(w.pending, b[:n]...)
			if w.litBuf != nil {
				w.litBuf = append(w.litBuf, b[:n]...)
			}
			w.lit -= int64(n)
			w.cont = false // the client sends literal bytes only once asked
			b = b[n:]
			if w.lit == 0 && w.litBuf != nil {
				w.endLiteral()
			}
		default:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				w.hold(b)
				return
			}
			w.hold(b[:i+1])
			b = b[i+1:]
			w.endLine()
		}
	}
	w.rest = append(w.rest, b...)
}

// endLiteral checks a mailbox command's literal, now whole. go-imap
// answers a name it cannot decode at once, but, believing the line ended
// with the literal's header, takes the rest of the line for the next
// command and hangs up on its syntax error: the rest is not passed on.
func (w *cmdWatch) endLiteral() {
	if !validMailboxName(w.litBuf) {
		w.badName, w.skip = true, true
	}
	w.litBuf = nil
}

// hold adds part of a line; a line past maxHeld goes on unexamined.
func (w *cmdWatch) hold(b []byte) {
	if w.skip {
		return
	}
	if w.long {
		w.pending = append(w.pending, b...)
		return
	}
	w.line = append(w.line, b...)
	if len(w.line) > maxHeld {
		w.pending = append(w.pending, w.line...)
		w.line, w.long = nil, true
	}
}

// endLine examines a whole line, held in w.line (empty if it was long).
func (w *cmdWatch) endLine() {
	line := w.line
	w.line = nil
	if w.skip {
		w.skip = false
		w.endCommand()
		return
	}
	if w.long {
		w.long = false
		w.tag, w.cmd = "", ""
		return
	}
	first := false
	if w.tag == "" {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			// DONE after IDLE, a SASL response, or garbage go-imap
			// refuses on its own.
			w.pending = append(w.pending, line...)
			return
		}
		w.tag, w.cmd, w.badName, w.answered, first = f[0], strings.ToUpper(f[1]), false, false, true
		if w.cmd == "UID" && len(f) > 2 {
			w.cmd += " " + strings.ToUpper(f[2])
		}
	}
	if mailboxCmds[w.cmd] && suspectName(line) {
		w.badName = true
	}
	size, sync, ok := literalHeader(line)
	if ok && w.cmd != "APPEND" && size > maxLiteral {
		if first && sync {
			w.reply = w.tag + " NO [TOOBIG] Literals are limited to 4096 bytes outside APPEND\r\n"
		} else {
			w.reply = w.tag + " BAD [TOOBIG] Literals are limited to 4096 bytes outside APPEND\r\n" +
				"* BYE Literal too big\r\n"
			w.hangUp = true
		}
		w.tag, w.cmd = "", ""
		return
	}
	w.pending = append(w.pending, line...)
	if ok {
		w.lit, w.cont = size, sync
		if mailboxCmds[w.cmd] && w.cmd != "APPEND" && size > 0 {
			w.litBuf = make([]byte, 0, size)
		}
		return
	}
	if w.cmd == "STARTTLS" {
		w.off = true
	}
	w.endCommand()
}

// endCommand: the client has sent the whole command.
func (w *cmdWatch) endCommand() {
	if w.badName && !w.answered {
		if w.bad == nil || len(w.bad) >= maxBad {
			w.bad = map[string]bool{}
		}
		w.bad[w.tag] = true
	}
	w.tag, w.cmd, w.badName = "", "", false
}

// suspectName tells whether a command line may hold a mailbox name
// go-imap cannot decode: one that is not UTF-8, has control characters
// or a modified UTF-7 shift ("&"), which may be malformed.
func suspectName(line []byte) bool {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	return !utf8.Valid(line) || bytes.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '&' })
}

// validMailboxName tells whether go-imap decodes name: UTF-8 without
// control characters, where "&" starts modified UTF-7 (RFC 3501 section
// 5.1.3): "&-", or modified base64 of UTF-16 ended by "-", encoding no
// printable ASCII and not right after another such run.
func validMailboxName(name []byte) bool {
	if !utf8.Valid(name) {
		return false
	}
	shifted := false // the previous run was base64
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c != '&' {
			shifted = false
			continue
		}
		end := bytes.IndexByte(name[i+1:], '-')
		if end < 0 {
			return false
		}
		run := name[i+1 : i+1+end]
		i += end + 1
		if len(run) == 0 {
			shifted = false
			continue
		}
		if shifted || !validUTF7Run(run) {
			return false
		}
		shifted = true
	}
	return true
}

var utf7Enc = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

func validUTF7Run(run []byte) bool {
	if bytes.ContainsAny(run, "\r\n=") {
		return false
	}
	b, err := utf7Enc.DecodeString(string(run))
	if err != nil || len(b) == 0 || len(b)%2 == 1 {
		return false
	}
	for i := 0; i < len(b); i += 2 {
		r := rune(b[i])<<8 | rune(b[i+1])
		if utf16.IsSurrogate(r) {
			if i += 2; i == len(b) {
				return false
			}
			if utf16.DecodeRune(r, rune(b[i])<<8|rune(b[i+1])) == utf8.RuneError {
				return false
			}
		} else if 0x20 <= r && r <= 0x7e {
			return false
		}
	}
	return true
}

// literalHeader parses the literal announced at the end of a line,
// "{N}" (synchronizing) or "{N+}" (RFC 7888); an N past int64 counts as
// huge.
func literalHeader(line []byte) (size int64, sync, ok bool) {
	l := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if !bytes.HasSuffix(l, []byte("}")) {
		return 0, false, false
	}
	open := bytes.LastIndexByte(l, '{')
	if open < 0 {
		return 0, false, false
	}
	num := l[open+1 : len(l)-1]
	sync = true
	if n, ok := bytes.CutSuffix(num, []byte("+")); ok {
		num, sync = n, false
	}
	if len(num) == 0 {
		return 0, false, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	size, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		size = 1<<63 - 1
	}
	return size, sync, true
}

// sent sees what go-imap writes: a "+" asks for a pending literal, and
// its tagged answer to the command in progress means it refused the
// command before asking (the client then sends no literal). It returns
// p, or its rewrite.
func (w *cmdWatch) sent(p []byte) []byte {
	if w.off {
		return p
	}
	tag, rest, _ := bytes.Cut(p, []byte(" "))
	current := w.tag != "" && string(tag) == w.tag
	bad := current && w.badName
	if current {
		w.answered = true
	}
	if current && w.lit > 0 && w.cont {
		w.lit, w.cont, w.litBuf = 0, false, nil
		w.tag, w.cmd = "", ""
	} else if w.lit > 0 && bytes.HasPrefix(p, []byte("+")) {
		w.cont = false
	}
	if w.bad[string(tag)] {
		delete(w.bad, string(tag))
		bad = true
	}
	if !bad || !bytes.Equal(rest, []byte("NO [SERVERBUG] Internal server error\r\n")) {
		return p
	}
	return []byte(string(tag) + " BAD [CLIENTBUG] Mailbox name is not valid UTF-8 or modified UTF-7\r\n")
}

// watchListener passes its connections through a cmdWatch each.
type watchListener struct {
	net.Listener
	s *Server
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c, s: l.s}, nil
}

// watchedConn is a connection as go-imap sees it: the watch's view of
// what the client sends, and the watch's rewrites of what go-imap
// answers. It also counts TOOBIG answers.
type watchedConn struct {
	net.Conn
	s *Server

	wmu sync.Mutex // serializes writes: go-imap's and the watch's replies

	mu   sync.Mutex // guards w and rerr
	w    cmdWatch
	rerr error // a read error, for after the watch's pending bytes
	rbuf []byte
}

// Read gives go-imap what the watch lets through, writing the watch's
// replies in turn, so that they follow go-imap's answers to earlier
// commands. go-imap reads from one goroutine at a time; c.mu is not held
// while reading, since go-imap writes meanwhile (in IDLE).
func (c *watchedConn) Read(p []byte) (int, error) {
	w := &c.w
	for {
		c.mu.Lock()
		switch {
		case len(w.pending) > 0:
			n := copy(p, w.pending)
			w.pending = w.pending[n:]
			c.mu.Unlock()
			return n, nil
		case w.reply != "":
			reply, hangUp, rest := w.reply, w.hangUp, w.rest
			w.reply, w.hangUp, w.rest = "", false, nil
			c.mu.Unlock()
			c.s.stats.tooLarge.Add(1)
			c.wmu.Lock()
			_, err := c.Conn.Write([]byte(reply))
			c.wmu.Unlock()
			if err != nil {
				return 0, err
			}
			if hangUp {
				c.Conn.Close()
				return 0, io.EOF
			}
			c.mu.Lock()
			w.feed(rest)
			c.mu.Unlock()
			continue
		case c.rerr != nil:
			err := c.rerr
			c.rerr = nil
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		if c.rbuf == nil {
			c.rbuf = make([]byte, 4096)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.mu.Lock()
		w.feed(c.rbuf[:n])
		c.rerr = err
		c.mu.Unlock()
	}
}

// tooBig matches a tagged NO [TOOBIG] status response. go-imap flushes
// each response with a write of its own, so such an answer starts a
// write (after STARTTLS it is ciphertext, and not counted).
var tooBig = regexp.MustCompile(`^[^ \r\n*+]+ NO \[TOOBIG\]`)

func (c *watchedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	q := c.w.sent(p)
	c.mu.Unlock()
	if len(q) < 512 && tooBig.Match(q) {
		c.s.stats.tooLarge.Add(1)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.Conn.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}
