package imapd

// BrokenMIME is brokenMIME, for the integration tests.
var BrokenMIME = brokenMIME
