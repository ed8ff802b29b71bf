package subrole

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Viewer is what a member's own OAuth round trip told about them: who they
// are on Twitch and, from GET /subscriptions/user, their subscription to the
// broadcaster at that moment.
type Viewer struct {
	TwitchUserID string
	TwitchLogin  string
	Tier         Tier // TierNone: not subscribed (Helix answered 404)
	IsGift       bool
	GifterLogin  string
}

// LinkResult is what CompleteLink stored.
type LinkResult struct {
	Link     Link         // the new link
	Previous Link         // the link it replaced; zero when the member was not linked
	Sub      Subscription // the subscription state after the check
	Desired  []string     // the managed roles the member should now hold
	State    OAuthState   // the state that was used
}

// NewOAuthState issues a state for an OAuth round trip and stores it,
// expiring after StateTTL. For PurposeLink, discordUserID (a snowflake),
// discordName and guildID record who ran /link; for PurposeBroadcaster and
// PurposeDashboard they are empty. Up to 100 expired states are pruned in the same commit (the
// expiry index makes that cost only the expired ones). When
// MaxPendingLinkStates member states are already pending, it fails with an
// error wrapping ErrTooManyStates. Broadcaster and dashboard states are made
// by anyone who opens the connect or login page, so a flood must not lock
// the streamer out: at MaxPendingBroadcasterStates the oldest pending one of
// that purpose is expired to make room instead.
func (s *Service) NewOAuthState(ctx context.Context, p OAuthPurpose, discordUserID, discordName, guildID string) (string, error) {
	tok, err := NewStateToken(p, discordUserID)
	if err != nil {
		return "", err
	}
	now := s.now()
	st := OAuthState{Key: tok.Key(), Purpose: p, DiscordUserID: discordUserID, DiscordName: discordName,
		GuildID: guildID, Created: now, Expires: now.Add(StateTTL)}
	limit := MaxPendingLinkStates
	if p != PurposeLink {
		limit = MaxPendingBroadcasterStates
	}
	err = s.store.Update(ctx, func(tx Tx) error {
		if _, err := tx.PruneOAuthStates(now, 100); err != nil {
			return err
		}
		n, err := tx.CountOAuthStates(p, now, limit)
		if err != nil {
			return err
		}
		if n >= limit {
			if p == PurposeLink {
				return fmt.Errorf("%d %s states pending: %w", n, p, ErrTooManyStates)
			}
			if err := expireOldestState(tx, p, now); err != nil {
				return err
			}
		}
		return tx.PutOAuthState(st)
	})
	if err != nil {
		return "", fmt.Errorf("subrole: new oauth state: %w", err)
	}
	return tok.String(), nil
}

// expireOldestState makes the pending state of p that expires first expire
// now, so that it stops counting as pending (and is pruned later).
func expireOldestState(tx Tx, p OAuthPurpose, now time.Time) error {
	errFound := errors.New("found")
	var oldest OAuthState
	err := tx.ForEachOAuthState(p, now, func(st OAuthState) error {
		oldest = st
		return errFound
	})
	if !errors.Is(err, errFound) {
		return err // nil: none pending after all
	}
	oldest.Expires = now
	return tx.PutOAuthState(oldest)
}

// CheckState reports whether raw is a valid, unused, unexpired state for
// purpose p, without using it up. It returns an error wrapping ErrBadState
// (a *StateError with the reason) when it is not. Callers check a state
// before talking to Twitch and use it up in the commit that stores the
// result (CompleteLink, ConnectBroadcaster).
func (s *Service) CheckState(ctx context.Context, raw string, p OAuthPurpose) (OAuthState, error) {
	var st OAuthState
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		st, err = s.checkState(tx, raw, p)
		return err
	})
	return st, err
}

// checkState validates raw against the stored record inside tx.
func (s *Service) checkState(tx Tx, raw string, p OAuthPurpose) (OAuthState, error) {
	tok, err := ParseState(raw)
	if err != nil {
		return OAuthState{}, err
	}
	st, err := tx.OAuthState(tok.Key())
	if errors.Is(err, ErrNotFound) {
		return OAuthState{}, stateErr(ReasonStateUnknown)
	}
	if err != nil {
		return OAuthState{}, err
	}
	switch {
	case !st.Used.IsZero() && st.Void != "":
		return st, stateErr(ReasonStateVoid)
	case !st.Used.IsZero():
		return st, stateErr(ReasonStateUsed)
	case !s.now().Before(st.Expires):
		return st, stateErr(ReasonStateExpired)
	case st.DiscordUserID != tok.Discord():
		// The random part is right but the member part was rewritten.
		return st, stateErr(ReasonStateOtherMember)
	case st.Purpose != tok.Purpose || st.Purpose != p:
		return st, stateErr(ReasonStateOtherPurpose)
	}
	return st, nil
}

// useState validates raw and marks it used, inside tx.
func (s *Service) useState(tx Tx, raw string, p OAuthPurpose) (OAuthState, error) {
	st, err := s.checkState(tx, raw, p)
	if err != nil {
		return st, err
	}
	st.Used = s.now()
	return st, tx.PutOAuthState(st)
}

// CompleteLink finishes a member's /link round trip in one commit: it uses
// up the state (which must have been opened in the browser holding the
// cookie browser and confirmed with Discord there, see BindBrowser and
// ConfirmDiscord), links the Discord member who ran /link to v's Twitch
// account, records v's subscription (Source oauth), queues the member's
// roles and appends the audit entries. Either all of it is stored or none.
//
// A bad state fails with an error wrapping ErrBadState. A Twitch account
// linked to another member fails with an error wrapping ErrConflict. A
// member who was linked to another Twitch account is moved to v's; the old
// account's subscription state stays with the old account, so its months
// never carry over.
func (s *Service) CompleteLink(ctx context.Context, raw, browser string, v Viewer) (LinkResult, error) {
	if v.TwitchUserID == "" {
		return LinkResult{}, errors.New("subrole: complete link: no twitch user id")
	}
	var res LinkResult
	err := s.store.Update(ctx, func(tx Tx) error {
		res = LinkResult{}
		st, err := s.useLinkState(tx, raw, browser)
		if err != nil {
			return err
		}
		res.State = st
		if owner, err := tx.LinkByTwitch(v.TwitchUserID); err == nil && owner.DiscordUserID != st.DiscordUserID {
			return fmt.Errorf("twitch user %s is linked to another member: %w", v.TwitchUserID, ErrConflict)
		} else if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		old, err := tx.LinkByDiscord(st.DiscordUserID)
		if err == nil {
			res.Previous = old
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		now := s.now()
		link := Link{DiscordUserID: st.DiscordUserID, TwitchUserID: v.TwitchUserID, TwitchLogin: v.TwitchLogin,
			DiscordName: st.DiscordName, Linked: now}
		if res.Previous.TwitchUserID == v.TwitchUserID {
			link.Linked = res.Previous.Linked // a repeated /link keeps the original date
		}
		if err := tx.PutLink(link); err != nil {
			return err
		}
		before, err := loadSubscription(tx, v.TwitchUserID)
		if err != nil {
			return err
		}
		after, _ := observeViewer(before, v, now, "oauth check", SourceOAuth)
		if err := tx.PutSubscription(after); err != nil {
			return err
		}
		was := "unlinked"
		if res.Previous.TwitchUserID != "" {
			was = "linked to " + firstNonEmpty(res.Previous.TwitchLogin, res.Previous.TwitchUserID)
		}
		if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditLink, TwitchUserID: v.TwitchUserID,
			DiscordUserID: st.DiscordUserID, Before: was, After: "linked to " + firstNonEmpty(v.TwitchLogin, v.TwitchUserID),
			Detail: "member completed /link"}); err != nil {
			return err
		}
		if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditSubscription, TwitchUserID: v.TwitchUserID,
			DiscordUserID: st.DiscordUserID, Before: describe(before), After: describe(after),
			Detail: "the member's own subscription check during /link"}); err != nil {
			return err
		}
		if end, ok := s.policy.GraceEnds(after, now); ok {
			if err := tx.ScheduleCheck(Check{At: end, TwitchUserID: after.TwitchUserID}); err != nil {
				return err
			}
		}
		res.Link, res.Sub = link, after
		res.Desired = DesiredRoles(s.policy, Member{Link: link, Sub: after}, now)
		return s.queueRoles(tx, link, res.Desired, "", now,
			fmt.Sprintf("subrole: linked Twitch %s (%s)", firstNonEmpty(v.TwitchLogin, v.TwitchUserID), describe(after)))
	})
	if err != nil {
		return LinkResult{}, fmt.Errorf("subrole: complete link: %w", err)
	}
	signal(s.outboxReady)
	signal(s.checksReady)
	return res, nil
}

// observeViewer applies a Helix observation of one viewer (their own check
// during /link, or an admin resync) to the stored state of their Twitch
// account, and reports whether it did. Helix lags behind EventSub, so the
// observation counts as HelixLag old, like a reconcile's: it is ignored when
// the state holds a newer fact (an event a moment ago), and an event sent
// after that point beats it even when Twitch delivers it late.
func observeViewer(before Subscription, v Viewer, now time.Time, kind string, src Source) (Subscription, bool) {
	after := before
	after.TwitchLogin = firstNonEmpty(v.TwitchLogin, before.TwitchLogin)
	observed := now.Add(-HelixLag)
	if before.LastEvent.After(observed) {
		return after, false
	}
	if v.Tier.Valid() {
		if !before.Active() {
			after.Started = now
		}
		if v.GifterLogin != before.GifterLogin {
			after.GifterID = "" // /subscriptions/user gives no gifter id
		}
		after.Tier, after.Ended, after.IsGift, after.GifterLogin = v.Tier, time.Time{}, v.IsGift, v.GifterLogin
	} else if before.Active() {
		after.Ended = now
	}
	after.LastEvent, after.LastEventType, after.Source = observed, kind, src
	return after, true
}

// ConnectBroadcaster finishes the broadcaster's authorization in one
// commit: it uses up the state and stores tok. The caller has checked that
// tok belongs to the configured broadcaster. A bad state fails with an
// error wrapping ErrBadState.
func (s *Service) ConnectBroadcaster(ctx context.Context, raw string, tok BroadcasterToken) error {
	err := s.store.Update(ctx, func(tx Tx) error {
		if _, err := s.useState(tx, raw, PurposeBroadcaster); err != nil {
			return err
		}
		if err := tx.PutBroadcasterToken(tok); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditBroadcaster, TwitchUserID: tok.UserID,
			After: "connected", Detail: fmt.Sprintf("the broadcaster %s authorized scopes %v", tok.Login, tok.Scopes)})
	})
	if err != nil {
		return fmt.Errorf("subrole: connect broadcaster: %w", err)
	}
	return nil
}

// AuditBroadcaster is the audit kind of the broadcaster's authorization
// changes; AuditNotice records what members were told (or could not be).
const (
	AuditBroadcaster AuditKind = "broadcaster"
	AuditNotice      AuditKind = "notice"
)

// PendingLink reports whether a Discord member started a /link round trip
// that is not finished yet (not used, not voided, not expired), and when the
// newest such one expires. /status shows it as a pending relink.
func (s *Service) PendingLink(ctx context.Context, discordUserID string) (expires time.Time, pending bool, err error) {
	err = s.store.View(ctx, func(tx Tx) error {
		return tx.ForEachOAuthState(PurposeLink, s.now(), func(st OAuthState) error {
			if st.DiscordUserID == discordUserID && st.Used.IsZero() && st.Void == "" {
				expires, pending = st.Expires, true // soonest first: the last one is the newest
			}
			return nil
		})
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("subrole: pending link of %s: %w", discordUserID, err)
	}
	return expires, pending, nil
}

// Member returns the link and subscription state of a Discord member. A
// member who is not linked returns an error wrapping ErrNotFound.
func (s *Service) Member(ctx context.Context, discordUserID string) (Member, error) {
	var m Member
	err := s.store.View(ctx, func(tx Tx) error {
		link, err := tx.LinkByDiscord(discordUserID)
		if err != nil {
			return err
		}
		sub, err := loadSubscription(tx, link.TwitchUserID)
		m = Member{Link: link, Sub: sub}
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("subrole: member %s: %w", discordUserID, err)
	}
	return m, nil
}

// Resync rechecks one linked member against Helix (with the broadcaster's
// token, through src), stores what Helix says (Source helix) and queues the
// member's roles even when nothing changed, so roles edited by hand are
// repaired. A member who is not linked returns an error wrapping
// ErrNotFound; a Helix failure is returned as is and changes nothing.
func (s *Service) Resync(ctx context.Context, src SubscriberSource, discordUserID string) (Member, error) {
	m, err := s.Member(ctx, discordUserID)
	if err != nil {
		return Member{}, err
	}
	subs, err := src.Subscribers(ctx, []string{m.Link.TwitchUserID})
	if err != nil {
		return Member{}, fmt.Errorf("subrole: resync %s: %w", discordUserID, err)
	}
	var h HelixSubscription
	for _, x := range subs {
		if x.UserID == m.Link.TwitchUserID {
			h = x
		}
	}
	err = s.store.Update(ctx, func(tx Tx) error {
		link, err := tx.LinkByDiscord(discordUserID)
		if err != nil {
			return err
		}
		before, err := loadSubscription(tx, link.TwitchUserID)
		if err != nil {
			return err
		}
		now := s.now()
		after := before
		if link.TwitchUserID == m.Link.TwitchUserID { // not relinked meanwhile
			var applied bool
			after, applied = observeViewer(before, Viewer{TwitchUserID: link.TwitchUserID, TwitchLogin: h.UserLogin,
				Tier: h.Tier, IsGift: h.IsGift, GifterLogin: h.GifterLogin}, now, "resync", SourceHelix)
			if applied {
				after.GifterID = h.GifterID
			}
			if err := tx.PutSubscription(after); err != nil {
				return err
			}
			if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditSubscription, TwitchUserID: link.TwitchUserID,
				DiscordUserID: discordUserID, Before: describe(before), After: describe(after),
				Detail: "admin resync from Helix"}); err != nil {
				return err
			}
			if end, ok := s.policy.GraceEnds(after, now); ok {
				if err := tx.ScheduleCheck(Check{At: end, TwitchUserID: after.TwitchUserID}); err != nil {
					return err
				}
			}
		}
		m = Member{Link: link, Sub: after}
		return s.queueRoles(tx, link, DesiredRoles(s.policy, m, now), "", now,
			fmt.Sprintf("subrole: admin resync (%s, %s)", firstNonEmpty(after.TwitchLogin, link.TwitchUserID), describe(after)))
	})
	if err != nil {
		return Member{}, fmt.Errorf("subrole: resync %s: %w", discordUserID, err)
	}
	signal(s.outboxReady)
	signal(s.checksReady)
	return m, nil
}

// RecordAudit appends one audit entry in its own commit, for facts the
// adapters learn (a DM that could not be delivered). A zero Time is set to now.
func (s *Service) RecordAudit(ctx context.Context, e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if err := s.store.Update(ctx, func(tx Tx) error { return tx.AppendAudit(e) }); err != nil {
		return fmt.Errorf("subrole: record audit: %w", err)
	}
	return nil
}
