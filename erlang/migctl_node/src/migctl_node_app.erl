%% @doc The migctl_node application and its supervisor. It starts the
%% change recorder (migctl_recorder) unless the application env `recorder'
%% is false. Nothing here needs migctl to be connected.
-module(migctl_node_app).
-behaviour(application).
-behaviour(supervisor).

-export([start/2, stop/1, init/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    supervisor:start_link({local, migctl_node_sup}, ?MODULE, []).

-spec stop(term()) -> ok.
stop(_State) -> ok.

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Children = case application:get_env(migctl_node, recorder, true) of
                   true ->
                       [#{id => migctl_recorder,
                          start => {migctl_recorder, start_link, []},
                          restart => permanent,
                          shutdown => 5000,
                          type => worker,
                          modules => [migctl_recorder]}];
                   false -> []
               end,
    {ok, {#{strategy => one_for_one, intensity => 10, period => 60}, Children}}.
