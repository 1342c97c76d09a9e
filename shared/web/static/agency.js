/* Agency referral form, progressive enhancement only (the form works without it):
   the regency list shows the chosen province's regencies, and choosing crisis or a risk
   flag brings the crisis note forward. */
(function () {
  "use strict";
  var form = document.querySelector("form.referral-form");
  if (!form) { return; }
  var province = document.getElementById("f-province");
  var regency = document.getElementById("f-regency");
  function filterRegencies() {
    if (!province || !regency) { return; }
    var chosen = province.value;
    Array.prototype.forEach.call(regency.options, function (option) {
      var theirs = option.getAttribute("data-province");
      var show = !theirs || !chosen || theirs === chosen;
      option.hidden = !show;
      option.disabled = !show;
      if (!show && option.selected) { regency.value = ""; }
    });
  }
  var note = document.getElementById("crisis-note");
  function urgent() {
    var crisis = form.querySelector("input[name=urgency][value=crisis]:checked");
    var risks = form.querySelectorAll("input[name=risk_flags]:checked");
    return Boolean(crisis) || risks.length > 0;
  }
  function showCrisis() {
    if (!note) { return; }
    var on = urgent();
    note.classList.toggle("active", on);
    note.setAttribute("role", on ? "alert" : "note");
  }
  if (province) { province.addEventListener("change", filterRegencies); filterRegencies(); }
  form.addEventListener("change", function (event) {
    var name = event.target && event.target.name;
    if (name === "urgency" || name === "risk_flags") { showCrisis(); }
  });
  showCrisis();
}());
