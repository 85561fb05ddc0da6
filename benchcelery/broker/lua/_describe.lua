-- Snippet: `describe(item)`, a waiting message's own delivery tag and method (either nil when the
-- message has none, or is no JSON at all). Included by fetch (rate limits, lapses) and recover (a
-- take that did not read the tag: the lapse is counted under the message's own tag).

local function describe(item)
  local tag, method = nil, nil
  local ok, msg = pcall(cjson.decode, item)
  if ok and type(msg) == 'table' then
    if type(msg['properties']) == 'table' and type(msg['properties']['delivery_tag']) == 'string' then
      tag = msg['properties']['delivery_tag']
    end
    local h = msg['headers']
    if type(h) == 'table' then
      if type(h['method']) == 'string' then method = h['method']
      elseif type(h['shadow']) == 'string' then method = h['shadow'] end
    end
  end
  return tag, method
end
