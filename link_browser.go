package subrole

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// A /link round trip is bound to the member who ran /link twice over
// before Twitch is asked, so that a forwarded button or a forwarded Twitch
// URL cannot link the Twitch account of whoever opens it to someone else's
// Discord account:
//
//  1. BindBrowser: the browser that opens the button gets a random cookie;
//     the state keeps only its hash.
//  2. ConfirmDiscord: Discord's OAuth, in that browser, names the member
//     who ran /link.
//  3. CompleteLink: Twitch's callback arrives in that browser, after 2.
//
// A request that fails 2 or 3 (another browser, another Discord account)
// voids the state: even if its Twitch code later reaches the right browser,
// it can no longer be used. CheckBrowser and ConfirmDiscord do that.

// browserHash returns the stored form of a browser cookie.
func browserHash(browser string) string {
	sum := sha256.Sum256([]byte(browser))
	return hex.EncodeToString(sum[:])
}

// browserRefusal says why the browser holding the cookie browser may not
// continue st's round trip ("" when it may). confirmed also requires
// Discord's confirmation.
func browserRefusal(st OAuthState, browser string, confirmed bool) string {
	if st.BrowserHash == "" || browser == "" ||
		subtle.ConstantTimeCompare([]byte(st.BrowserHash), []byte(browserHash(browser))) != 1 {
		return ReasonStateOtherBrowser
	}
	if confirmed && st.DiscordVerified.IsZero() {
		return ReasonStateNoDiscord
	}
	return ""
}

// BindBrowser binds an unused /link state to the browser that opened its
// button: browser is the random value of the cookie the caller sets there
// (only its hash is stored). Opening the button again in the same browser
// changes nothing. Another browser takes the binding over until Discord has
// confirmed the member; after that it is refused with a StateError
// (ReasonStateOtherBrowser) and the first browser keeps it. A bad state
// fails with an error wrapping ErrBadState.
func (s *Service) BindBrowser(ctx context.Context, raw, browser string) (OAuthState, error) {
	if browser == "" {
		return OAuthState{}, errors.New("subrole: bind browser: empty cookie")
	}
	var st OAuthState
	err := s.store.Update(ctx, func(tx Tx) error {
		var err error
		st, err = s.checkState(tx, raw, PurposeLink)
		switch {
		case err != nil:
			return err
		case browserRefusal(st, browser, false) == "":
			return nil // the same browser again
		case !st.DiscordVerified.IsZero():
			return stateErr(ReasonStateOtherBrowser)
		}
		st.BrowserHash, st.DiscordVerified = browserHash(browser), time.Time{}
		return tx.PutOAuthState(st)
	})
	if err != nil {
		return st, fmt.Errorf("subrole: bind browser: %w", err)
	}
	return st, nil
}

// CheckBrowser reports whether the browser holding the cookie browser may
// continue the /link round trip of raw, without using the state up;
// confirmed also requires Discord's confirmation (ConfirmDiscord). It
// returns an error wrapping ErrBadState (a *StateError) when it may not. A
// state refused for the browser (ReasonStateOtherBrowser,
// ReasonStateNoDiscord) is voided in a commit, so that it can never be used.
func (s *Service) CheckBrowser(ctx context.Context, raw, browser string, confirmed bool) (OAuthState, error) {
	st, err := s.CheckState(ctx, raw, PurposeLink)
	if err != nil || browserRefusal(st, browser, confirmed) == "" {
		return st, err
	}
	return s.settle(ctx, raw, func(st OAuthState) string { return browserRefusal(st, browser, confirmed) }, nil)
}

// ConfirmDiscord records that Discord's OAuth, in the browser holding the
// cookie browser, named discordUserID as the signed-in user. It succeeds
// only when that is the member who ran /link and the browser is the one
// bound by BindBrowser; otherwise the state is voided and the error, a
// *StateError wrapping ErrBadState, says why (ReasonStateOtherDiscord,
// ReasonStateOtherBrowser).
func (s *Service) ConfirmDiscord(ctx context.Context, raw, browser, discordUserID string) (OAuthState, error) {
	return s.settle(ctx, raw, func(st OAuthState) string {
		if reason := browserRefusal(st, browser, false); reason != "" {
			return reason
		}
		if discordUserID == "" || discordUserID != st.DiscordUserID {
			return ReasonStateOtherDiscord
		}
		return ""
	}, func(st *OAuthState) { st.DiscordVerified = s.now() })
}

// settle checks raw in one commit and asks decide about it: a reason voids
// the state (marks it used and void) and is returned as a StateError; ""
// applies accept, if any, and stores the state. A bad state is returned as is.
func (s *Service) settle(ctx context.Context, raw string, decide func(OAuthState) string, accept func(*OAuthState)) (OAuthState, error) {
	var st OAuthState
	var refused error
	err := s.store.Update(ctx, func(tx Tx) error {
		refused = nil
		var err error
		if st, err = s.checkState(tx, raw, PurposeLink); err != nil {
			return err
		}
		if reason := decide(st); reason != "" {
			refused = stateErr(reason)
			st.Used, st.Void = s.now(), reason
		} else if accept != nil {
			accept(&st)
		} else {
			return nil
		}
		return tx.PutOAuthState(st)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return st, fmt.Errorf("subrole: link browser: %w", err)
	}
	return st, nil
}

// useLinkState validates raw for the browser holding the cookie browser
// (bound and confirmed with Discord) and marks it used, inside tx.
func (s *Service) useLinkState(tx Tx, raw, browser string) (OAuthState, error) {
	st, err := s.checkState(tx, raw, PurposeLink)
	if err != nil {
		return st, err
	}
	if reason := browserRefusal(st, browser, true); reason != "" {
		return st, stateErr(reason)
	}
	st.Used = s.now()
	return st, tx.PutOAuthState(st)
}
