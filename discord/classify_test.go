package discord

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

// TestClassify pins the retry decision for every kind of Discord failure:
// what is retried forever (nothing lost in an incident), what is recorded
// and dropped (the member, role or permission is wrong), and what is tried
// a few times.
func TestClassify(t *testing.T) {
	rest := func(status, code int) error {
		e := &discordgo.RESTError{Response: &http.Response{StatusCode: status}}
		if code != 0 {
			e.Message = &discordgo.APIErrorMessage{Code: code, Message: "x"}
		}
		return fmt.Errorf("discord: add role: %w", e) // wrapped, as the applier sees it
	}
	tests := []struct {
		name      string
		err       error
		want      failure
		wantAfter time.Duration
	}{
		{"429 with retry_after", &discordgo.RateLimitError{RateLimit: &discordgo.RateLimit{TooManyRequests: &discordgo.TooManyRequests{RetryAfter: 1500 * time.Millisecond}}}, failTransient, 1500 * time.Millisecond},
		{"429 as a REST error", rest(429, 0), failTransient, 0},
		{"500", rest(500, 0), failTransient, 0},
		{"502 from a proxy", rest(502, 0), failTransient, 0},
		{"401 while the token is reset", rest(401, 0), failTransient, 0},
		{"403 without a code (Cloudflare)", rest(403, 0), failTransient, 0},
		{"40333 internal network error", rest(403, 40333), failTransient, 0},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, failTransient, 0},
		{"50013 missing permissions", rest(403, discordgo.ErrCodeMissingPermissions), failPermanent, 0},
		{"50001 missing access", rest(403, discordgo.ErrCodeMissingAccess), failPermanent, 0},
		{"10007 unknown member", rest(404, discordgo.ErrCodeUnknownMember), failPermanent, 0},
		{"10011 unknown role", rest(404, discordgo.ErrCodeUnknownRole), failPermanent, 0},
		{"400 with another code", rest(400, 50035), failUnexpected, 0},
		{"404 without a code", rest(404, 0), failUnexpected, 0},
	}
	for _, tt := range tests {
		after, got := classify(tt.err)
		if got != tt.want || after != tt.wantAfter {
			t.Errorf("%s: classify = %v, %v; want %v, %v", tt.name, after, got, tt.wantAfter, tt.want)
		}
	}
}
