"""Marketing audiences at a partner: the model goes to the data, only thresholded noisy counts come back.

The card center trains, with the ordinary protocol, a model whose features
are all the partner's (it brings only labels), and hands the partner what it
holds of it (`model.CardCenterPart`: intercept, calibration, scorecard). The
partner assembles the whole model (`model.AudienceModel`) and can then score
any of its users alone, most of whom the card center has never seen.

A query (`query.AudienceQuery`) names the model, a cut-off in scorecard
points and segment columns the partner exposes. The partner scores its whole
user base (`users`), counts the audience per segment cell, adds discrete
Laplace noise of the query's ε (`noise`), suppresses cells whose noisy count
is below its minimum cell size, and answers (`query.AudienceAnswer`). It
refuses a query over the card center's privacy budget or of too small an ε
(`budget`), one whose cut-off is near an earlier one's on the same model
(`differencing`), a segment column it does not expose, a model it does not
hold, or any new query while an earlier answer is not on the chain yet
(`partner`). No refusal depends on who is in an audience.

A campaign materialises an answered query's audience as a file of the
partner's own user ids, in its own state: no id or feature value leaves the
partner; the card center learns the noisy counts and a campaign id.

- `policy`: the partner's rules (segments exposed, minimum cell, budget)
- `model`: the card center's part, the assembled model, its points
- `users`: the partner's user base, read and checked
- `noise`: the discrete Laplace mechanism and its bound
- `query`: queries, answers and their ids
- `budget`: ε spent in a window, and when a query would exceed it
- `differencing`: refusing a cut-off near an earlier one's on the same model
- `partner`: the partner's steps and their on-disk record
- `fields`: checking a document from a peer, field by field
"""
