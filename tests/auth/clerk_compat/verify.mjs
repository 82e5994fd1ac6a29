// Clerk's own verifier (@clerk/backend verifyToken) on a list of tokens, for
// tests/auth/test_clerk_compat.py. Reads {jwtKey, authorizedParties, clockSkewInMs, nowMs,
// tokens} as JSON on stdin; prints [{accepted, reason}] in the same order.
//
// The key is the PEM (jwtKey), so nothing is fetched; apiUrl points at a closed loopback port
// so that even a code path that tried would never reach Clerk's servers.
import { verifyToken } from "@clerk/backend";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { jwtKey, authorizedParties, clockSkewInMs, nowMs, tokens } = JSON.parse(input);

// Both verifiers judge the corpus at the same instant: the Python side's clock reads nowMs too.
Date.now = () => nowMs;

// The public verifyToken returns the payload, or throws the first error.
const results = [];
for (const token of tokens) {
  try {
    const payload = await verifyToken(token, {
      jwtKey,
      authorizedParties,
      clockSkewInMs,
      apiUrl: "http://127.0.0.1:1",
    });
    results.push({ accepted: Boolean(payload), reason: null });
  } catch (error) {
    results.push({ accepted: false, reason: String(error?.reason ?? error) });
  }
}
process.stdout.write(JSON.stringify(results));
