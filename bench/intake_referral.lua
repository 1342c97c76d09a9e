-- wrk script for the intake stage: each request POSTs a new, valid referral (its own
-- external_ref, so every one is a new row committed before the 202) with the bearer key.
--   wrk -s bench/intake_referral.lua URL -- <run-id> <api-key>
-- At the end it prints one line "BENCH_JSON {...}" with the status counts of all threads
-- and the latency percentiles, for bench/intake_http.py to read.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or tostring(os.time())
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. (args[2] or "")}
  n = 0
  accepted = 0
  other = 0
  last_other = 0
  categories = {"korban_tindak_kekerasan", "perempuan_rawan_sosial_ekonomi", "anak_korban_tindak_kekerasan",
                "keluarga_bermasalah_sosial_psikologis", "penyandang_disabilitas", "korban_trafficking",
                "fakir_miskin", "lanjut_usia_terlantar"}
  regions = {"12.71.05", "31.74", "33.74.01", "35.78.02", "73.71", "51.71.03", "32.73.10", "53.01"}
  needs = {'["emotional"]', '["emotional","informational"]', '["instrumental"]', '["network","esteem"]'}
  genders = {"female", "female", "male", "other"}
  narrative = string.rep("Klien membutuhkan pendampingan psikososial dan informasi layanan. ", 5)
end

function request()
  n = n + 1
  local body = string.format(
    '{"external_ref":"%s-%d-%d","pmks_category":"%s","needs":%s,"urgency":"%s",' ..
    '"client":{"initials":"AB","age":%d,"gender":"%s","region_code":"%s","languages":["id"],' ..
    '"modality":"any","contact":{"name":"Nama Klien Uji","phone":"+62812345%04d"},' ..
    '"consent":{"share_with_provider":true,"contact_by_provider":true}},"narrative":"%s"}',
    run, id, n, categories[n % #categories + 1], needs[n % #needs + 1],
    (n % 10 == 0) and "crisis" or "routine", 18 + n % 50, genders[n % #genders + 1],
    regions[n % #regions + 1], n % 10000, narrative)
  return wrk.format("POST", "/v1/referrals", headers, body)
end

function response(status, hdrs, body)
  if status == 202 then
    accepted = accepted + 1
  else
    other = other + 1
    last_other = status
  end
end

function done(summary, latency, requests)
  local acc, oth, last = 0, 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
    if t:get("last_other") ~= 0 then last = t:get("last_other") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"accepted":%d,"other_status":%d,"last_other_status":%d,"requests":%d,"duration_us":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    acc, oth, last, summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
