-- prove.lua — credentials proven once per credential set: remembers the fingerprint of credentials the
-- provider just accepted, so every process with the same settings may use the full cap at once.
-- KEYS[1]  login HASH (account state)
-- ARGV[1]  fingerprint: the caller's salted slow hash of the credentials (never the secret)
-- Returns 1 when remembered; 0 when refused because the account is stopped (an error 2 came after the
-- good answer: the credentials, or the IP, may have gone bad since; the operator's resume first).
if redis.call('HGET', KEYS[1], 'state') == 'stopped' then return 0 end
redis.call('HSET', KEYS[1], 'proven_fp', ARGV[1], 'verified', '1')
return 1
