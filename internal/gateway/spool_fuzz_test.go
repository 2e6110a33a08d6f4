package gateway

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// FuzzDecodeSpool: a spool file read back after a restart decodes or is
// left alone, and what decodes is spooled again unchanged.
func FuzzDecodeSpool(f *testing.F) {
	seed, _ := json.Marshal(&outMessage{From: "alice@example.org", Msg: []byte("Subject: s\r\n\r\nbody\r\n"),
		First: time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), Attempt: 3, Pending: []string{"dave@remote.example"}})
	f.Add(seed)
	f.Add([]byte(`{"From":"","Msg":null,"First":"2026-11-26T07:00:00+01:00","Attempt":-1,"Pending":[""]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeSpool(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("decoded spool file does not encode: %v", err)
		}
		m2, err := decodeSpool(again)
		if err != nil || m2.From != m.From || !bytes.Equal(m2.Msg, m.Msg) || !m2.First.Equal(m.First) ||
			m2.Attempt != m.Attempt || !slices.Equal(m2.Pending, m.Pending) {
			t.Fatalf("%+v spooled again reads as %+v, %v", m, m2, err)
		}
	})
}
