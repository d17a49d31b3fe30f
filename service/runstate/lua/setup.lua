-- Note what a worker found when it opened the run, only while the run exists (a delete
-- racing it must not leave a stray hash behind). KEYS: run; ARGV: anchors JSON, device,
-- load seconds.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'anchors', ARGV[1])
redis.call('HSETNX', KEYS[1], 'device', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'load_s', ARGV[3]) end
return 1
