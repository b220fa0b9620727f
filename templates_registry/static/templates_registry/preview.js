"use strict";
// The version preview page (preview.html): the HTML / plain text tabs, and the appearance radios, which give
// both frames the light or a dark copy of the message (the copies come rendered from the server).
(function () {
  function setUpTabs(list) {
    const tabs = Array.from(list.querySelectorAll('[role="tab"]'));
    function select(tab, focus) {
      for (const each of tabs) {
        const on = each === tab;
        each.setAttribute("aria-selected", on ? "true" : "false");
        each.tabIndex = on ? 0 : -1;
        document.getElementById(each.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) tab.focus();
    }
    list.addEventListener("click", function (event) {
      const tab = event.target.closest('[role="tab"]');
      if (tab) select(tab, false);
    });
    list.addEventListener("keydown", function (event) {
      const at = tabs.indexOf(document.activeElement);
      const to = {ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1}[event.key];
      if (at < 0 || to === undefined) return;
      event.preventDefault();
      select(tabs[(to + tabs.length) % tabs.length], true);
    });
    select(tabs.find(function (tab) { return tab.getAttribute("aria-selected") === "true"; }) || tabs[0], false);
  }

  function setUpAppearance(fieldset) {
    const data = document.getElementById("sp-frames");
    const box = document.querySelector(".sp-previews");
    const frames = box ? Array.from(box.querySelectorAll("iframe")) : [];
    if (!data || !frames.length) return;
    const copies = JSON.parse(data.textContent);
    copies.light = frames[0].getAttribute("srcdoc");
    function show(appearance) {
      if (copies[appearance] === undefined) return;
      for (const frame of frames) frame.srcdoc = copies[appearance];
      box.dataset.appearance = appearance;
    }
    fieldset.addEventListener("change", function (event) { show(event.target.value); });
    const checked = fieldset.querySelector("input:checked");  // a reload keeps the radio: keep the frames with it
    if (checked && checked.value !== "light") show(checked.value);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[role="tablist"]').forEach(setUpTabs);
    document.querySelectorAll(".sp-appearance").forEach(setUpAppearance);
  });
})();
