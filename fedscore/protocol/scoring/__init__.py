"""Scoring new applicants with a trained model, one protocol step per function.

- `card_center`: the card center's scorer (its own values, the partners' partial scores, the answer)
- `partner`: a partner's scorer (one applicant's partial score)
- `consent`: consent tokens, the policy a party accepts them under, and their use counts
- `journal`: records kept on disk before a request is answered
- `batcher`: pending scoring entries batched into blocks every member co-signs
- `secrets`: the card center's applicant salt and consent key
- `scorecard`: points, decisions, credit limits and reasons from the log-odds
- `offline`: the same answer from the parties' model files, the reference
- `sources`: where a party looks an applicant up
"""
