package post

import "testing"

func TestHeaderFrom(t *testing.T) {
	for in, want := range map[string]string{
		"From: a@b.c\r\n\r\nbody":                          "a@b.c",
		"Subject: x\r\nFROM: \"A, B\" <a@b.c>\r\n\r\n":     "a@b.c",
		"From: Long Name\r\n <a@b.c>\r\nTo: x\r\n\r\n":     "a@b.c",
		"To: x@y.z\n\nFrom: not@header.x":                  "",
		"no header at all":                                 "",
		"From: <>\r\n\r\n":                                 "",
		"X-From: a@b.c\r\nFrom: real@b.c\r\n\r\n":          "real@b.c",
		"From: =?windows-1252?q?Al=EFce?= <a@b.c>\r\n\r\n": "a@b.c",
		// What clients show is not what a bracket search finds.
		"From: bank@x.y (<a@b.c>)\r\n\r\n": "bank@x.y",
		"From: \"bank@x.y <a@b.c>\r\n\r\n": "",
		"From: bank@x.y, <a@b.c>\r\n\r\n":  "",
		"\rFrom: a@b.c\r\n\r\n":            "",
		"\r\nFrom: a@b.c\r\n":              "",
	} {
		if got := headerFrom([]byte(in)); got != want {
			t.Errorf("headerFrom(%q) = %q, want %q", in, got, want)
		}
	}
}
