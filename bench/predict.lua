-- wrk script for `tunekit serve` / tools/serve_torch.py load benchmarks: POST /predict with
-- 20 real MR test sentences in rotation; counts responses that are not a prediction.
local bodies = {
  [==[{"inputs": "The Rock is destined to be the 21st Century's new ''Conan'' and that he's going to make a splash even greater than Arnold Schwarzenegger, Jean Claud Van Damme or Steven Segal."}]==],
  [==[{"inputs": "A thoughtful, provocative, insistently humanizing film."}]==],
  [==[{"inputs": "The story loses its bite in a last minute happy ending that's even less plausible than the rest of the picture. Much of the way, though, this is a refreshingly novel ride."}]==],
  [==[{"inputs": "Disney has always been hit or miss when bringing beloved kids' books to the screen...Tuck Everlasting is a little of both."}]==],
  [==[{"inputs": "While The Isle is both preposterous and thoroughly misogynistic, its vistas are incredibly beautiful to look at."}]==],
  [==[{"inputs": "If it's possible for a sequel to outshine the original, then SL2 does just that."}]==],
  [==[{"inputs": "A thunderous ride at first, quiet cadences of pure finesse are few and far between; their shortage dilutes the potency of otherwise respectable action. Still, this flick is fun, and host to some truly excellent sequences."}]==],
  [==[{"inputs": "Far from perfect, but its heart is in the right place...innocent and well meaning."}]==],
  [==[{"inputs": "There's enough science to make it count as educational, and enough beauty to make it unforgettable."}]==],
  [==[{"inputs": "Watching Beanie and his gang put together his slasher video from spare parts and borrowed materials is as much fun as it must have been for them to make it."}]==],
  [==[{"inputs": "At its best early on as it plays the culture clashes between the brothers."}]==],
  [==[{"inputs": "Elling, portrayed with quiet fastidiousness by Per Christian Ellefsen, is a truly singular character, one whose frailties are only slightly magnified versions of the ones that vex nearly everyone."}]==],
  [==[{"inputs": "You wouldn't call The Good Girl a date movie (an anti date movie is more like it), but when it's good, it's good and horrid."}]==],
  [==[{"inputs": "M\u00fcnch's genuine insight makes the film's occasional overindulgence forgivable."}]==],
  [==[{"inputs": "For anyone who remembers the '60s or is interested in one man's response to stroke, Ram Dass: Fierce Grace is worth seeking out."}]==],
  [==[{"inputs": "Spielberg is the rare director who does not want to invite viewers to gawk at or applaud his special effects. He just wants them to be part of the action, the wallpaper of his chosen reality. Here, thankfully, they are."}]==],
  [==[{"inputs": "A whole lot foul, freaky and funny."}]==],
  [==[{"inputs": "As a randy film about sexy people in gorgeous places being pushed and pulled (literally and figuratively) by desire ... (Sex and Luc\u00eda) makes for an arousing good time."}]==],
  [==[{"inputs": "Longley has constructed a remarkably coherent, horrifically vivid snapshot of those turbulent days."}]==],
  [==[{"inputs": "Kinnear gives a tremendous performance."}]==]
}
local i = 0
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  statuses = {}
end

function request()
  i = i + 1
  return wrk.format(nil, "/predict", nil, bodies[(i % #bodies) + 1])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and not string.find(body, '"label"', 1, true) then
    bad = bad + 1
  end
  if status ~= 200 and status ~= 503 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
  end
  io.write(string.format("BAD_RESPONSES %d\n", total_bad))
  io.write(string.format("P50_MS %.2f\nP99_MS %.2f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
